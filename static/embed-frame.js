/* The embed widget inside its frame (static/embed-frame.js, served at /assets/embed-frame.js; the page is
 * /embed/frame, rendered by the server with the site's name, origins and bounded settings as data-
 * attributes of <body>). See docs/embed.md.
 *
 * Consent comes first and cannot be bypassed:
 * - Before the visitor opts in, nothing else loads: no volunteer script or wasm, no program, no socket.
 * - Start (and Resume, and Donate after all) act only on a trusted click (event.isTrusted), on a widget that
 *   is plainly visible: IntersectionObserver v2 (trackVisibility) says it is neither covered nor
 *   see-through nor transformed, and it is at least MIN_WIDTH x MIN_HEIGHT. A page cannot click into this
 *   frame (it is cross-origin), and a click it lures the visitor into through a hidden frame is refused.
 * - While computing, a Stop button stays in the widget; if the widget becomes covered, computing pauses.
 * - Consent and opt-out are remembered per site in this frame's storage for 30 days, with their time.
 *   Remembered consent resumes only while the widget is plainly visible.
 * - Polite defaults: the server's bounded throttle and threads; nothing runs on phones and tablets or on a
 *   battery that is discharging and low; it pauses while the page is hidden.
 * The host page hears the widget's state and may only pause or stop it (see handleHostMessage). */
(function () {
  'use strict';

  var SITE_UNAVAILABLE = "This site's donation widget is not available.";
  var REMEMBER_MS = 30 * 24 * 3600 * 1000;
  var MIN_WIDTH = 300;
  var MIN_HEIGHT = 150;
  var LOW_BATTERY = 0.2;

  var body = document.body;
  var states = { consent: 1, running: 1, paused: 1, stopped: 1, unavailable: 1 };

  /* The host page's origin: the frame's parent as the browser reports it (Chromium and Safari), or the
   * referrer (embed.js asks for the origin as referrer). */
  function parentOrigin() {
    var ancestors = window.location.ancestorOrigins;
    if (ancestors && ancestors.length > 0) {
      return ancestors[0];
    }
    try {
      return new URL(document.referrer).origin;
    } catch (unreadable) {
      return '';
    }
  }

  function tellHost(state, targetOrigin) {
    if (window.parent === window || !states[state]) {
      return;
    }
    window.parent.postMessage({ type: 'distributivecom:state', state: state }, targetOrigin);
  }

  if (body.dataset.state === 'unavailable') {
    /* The neutral page: nothing to protect, so any host may hear that the widget is not available. */
    tellHost('unavailable', '*');
    return;
  }

  var site = body.dataset.site;
  var siteName = body.dataset.name;
  var allowedOrigins = (body.dataset.origins || '').split(' ').filter(Boolean);
  function bounded(value, min, max, fallback) {
    var number = parseInt(value, 10);
    return isFinite(number) ? Math.min(max, Math.max(min, number)) : fallback;
  }
  var throttle = bounded(body.dataset.throttle, 10, 50, 30);
  var threads = bounded(body.dataset.threads, 1, 2, 1);
  var host = parentOrigin();
  /* Messages go only to a host on the key's list (a nested or unknown parent hears nothing). */
  var hostOrigin = allowedOrigins.indexOf(host) >= 0 ? host : null;

  var element = function (id) { return document.getElementById(id); };
  var sections = { consent: element('consent'), running: element('running'), stopped: element('stopped') };

  /* ---- What the visitor chose, per site, for 30 days. ---- */
  var CHOICE_KEY = 'distributivecom.embed.choice.' + site;
  var IDENTITY_KEY = 'distributivecom.embed.identity.' + site;
  function storage() {
    try {
      return window.localStorage;
    } catch (refused) {
      return null;
    }
  }
  function readJson(key) {
    var store = storage();
    try {
      return store ? JSON.parse(store.getItem(key) || 'null') : null;
    } catch (damaged) {
      return null;
    }
  }
  function writeJson(key, value) {
    var store = storage();
    try {
      if (store) {
        store.setItem(key, JSON.stringify(value));
      }
    } catch (refused) {
      /* Without storage the choice lasts as long as this page. */
    }
  }
  function rememberedChoice() {
    var choice = readJson(CHOICE_KEY);
    if (!choice || (choice.choice !== 'in' && choice.choice !== 'out') || typeof choice.at !== 'number') {
      return null;
    }
    return Date.now() - choice.at < REMEMBER_MS ? choice : null;
  }
  function remember(choice) {
    writeJson(CHOICE_KEY, { choice: choice, at: Date.now() });
  }

  /* ---- The device: phones, tablets and low batteries are left alone. ---- */
  function isMobile() {
    if (navigator.userAgentData && typeof navigator.userAgentData.mobile === 'boolean') {
      return navigator.userAgentData.mobile;
    }
    var coarse = window.matchMedia && window.matchMedia('(pointer: coarse)').matches;
    return Boolean(coarse) && Math.min(screen.width, screen.height) < 800;
  }
  var battery = { low: false };
  if (typeof navigator.getBattery === 'function') {
    navigator.getBattery().then(function (manager) {
      function update() {
        battery.low = !manager.charging && manager.level <= LOW_BATTERY;
        setPause('battery', battery.low);
      }
      manager.addEventListener('chargingchange', update);
      manager.addEventListener('levelchange', update);
      update();
    }, function () {
      /* Not allowed in this frame or not offered: nothing known, nothing held back. */
    });
  }

  /* ---- Is the widget plainly visible? ---- */
  var trackingVisibility = typeof IntersectionObserverEntry !== 'undefined' &&
    'isVisible' in IntersectionObserverEntry.prototype;
  var sight = { known: false, visible: false, intersecting: false, ratio: 0 };
  if (typeof IntersectionObserver === 'function') {
    var options = { threshold: [0, 0.25, 0.5, 0.75, 0.9, 1] };
    if (trackingVisibility) {
      options.trackVisibility = true;
      options.delay = 100;
    }
    new IntersectionObserver(function (entries) {
      var entry = entries[entries.length - 1];
      sight = {
        known: true,
        visible: trackingVisibility ? entry.isVisible : entry.isIntersecting,
        intersecting: entry.isIntersecting,
        ratio: entry.intersectionRatio
      };
      sightChanged();
    }, options).observe(element('widget'));
  } else {
    sight = { known: true, visible: true, intersecting: true, ratio: 1 };
  }

  /* Why the widget may not start now, in words for the visitor; null if it may. */
  function refusal(event) {
    if (!event || !event.isTrusted) {
      return 'Only a click by you can start this.';
    }
    if (isMobile()) {
      return 'Donating computing time is off on phones and tablets.';
    }
    if (battery.low) {
      return 'Your battery is low and not charging, so this will not start.';
    }
    if (document.hidden) {
      return 'This page is hidden.';
    }
    if (window.innerWidth < MIN_WIDTH || window.innerHeight < MIN_HEIGHT) {
      return 'This widget is too small to show what it does, so it will not start.';
    }
    if (!sight.known) {
      return 'One moment: the widget is still appearing. Try again.';
    }
    if (!sight.intersecting || sight.ratio < 0.9) {
      return 'Scroll so that the whole widget is in view, then try again.';
    }
    if (!sight.visible) {
      return 'This widget is covered or see-through on this page, so it will not start.';
    }
    return null;
  }

  /* ---- The widget's state, shown and told to the host page. ---- */
  var state = null;
  function show(section, newState, message) {
    Object.keys(sections).forEach(function (name) {
      sections[name].hidden = name !== section;
    });
    say(message || '');
    setState(newState);
  }
  function setState(newState) {
    if (newState === state) {
      return;
    }
    state = newState;
    body.dataset.state = newState;
    if (hostOrigin) {
      tellHost(newState, hostOrigin);
    }
  }
  function say(message) {
    element('message').textContent = message;
  }

  /* ---- The volunteer, loaded only once the visitor opted in. ---- */
  var volunteer = null;    /* { worker, bridge } once started */
  var starting = false;
  var generation = 0;      /* moves on every stop, so that a start still loading gives up */
  var pauses = {};         /* why it is paused: visitor, host, hidden, covered, battery */
  var sentPaused = false;
  var lastStats = null;

  function isPaused() {
    return Object.keys(pauses).some(function (reason) { return pauses[reason]; });
  }
  function setPause(reason, on) {
    pauses[reason] = Boolean(on);
    applyPause();
  }
  function applyPause() {
    if (!volunteer) {
      return;
    }
    var paused = isPaused();
    if (paused !== sentPaused) {
      sentPaused = paused;
      volunteer.worker.postMessage(volunteer.bridge.encode_command(paused ? 'pause' : 'resume'));
    }
    element('pause').textContent = pauses.visitor || pauses.host ? 'Resume' : 'Pause';
    setState(paused ? 'paused' : 'running');
    describe();
  }
  function describe() {
    if (!volunteer) {
      return;
    }
    var why = pauses.visitor ? 'you paused it' : pauses.host ? 'this page paused it' :
      pauses.hidden ? 'this page is hidden' : pauses.covered ? 'the widget is covered' :
      pauses.battery ? 'the battery is low' : null;
    var done = lastStats ? lastStats.chunks_done : 0;
    var seconds = lastStats ? lastStats.compute_ms / 1000 : 0;
    var time = seconds < 10 ? seconds.toFixed(1) : String(Math.round(seconds));
    var progress = done + (done === 1 ? ' task' : ' tasks') + ' done, ' + time + ' s of computing.';
    element('progress').textContent = why ? 'Paused: ' + why + '. ' + progress :
      'Using at most ' + throttle + '% of ' + (threads === 1 ? 'one CPU core' : threads + ' CPU cores') +
      '. ' + progress;
  }

  async function identity() {
    var saved = readJson(IDENTITY_KEY);
    if (saved && typeof saved.id === 'string' && typeof saved.secret === 'string') {
      return saved;
    }
    var answer = await fetch('/api/sites/' + encodeURIComponent(site) + '/volunteers', {
      method: 'POST',
      headers: { Accept: 'application/json' },
      credentials: 'omit'
    });
    var text = await answer.text();
    var parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch (unreadable) {
      parsed = null;
    }
    if (!answer.ok) {
      var error = new Error(parsed && parsed.error ? parsed.error : 'The server refused (status ' + answer.status + ').');
      error.status = answer.status;
      throw error;
    }
    writeJson(IDENTITY_KEY, { id: parsed.id, secret: parsed.secret });
    return parsed;
  }

  async function start() {
    if (volunteer || starting) {
      return;
    }
    starting = true;
    var mine = generation;
    show('running', 'running', '');
    element('progress').textContent = 'Starting…';
    try {
      var credential = await identity();
      if (mine !== generation) {
        return;
      }
      remember('in');
      var bridge = await import('/assets/distributivecom_web_worker.js');
      await bridge.default();
      if (mine !== generation) {
        return;
      }
      var worker = new Worker('/assets/volunteer-worker.js', { type: 'module', name: 'courier' });
      worker.onmessage = function (event) {
        courierEvent(bridge.decode_courier_event(new Uint8Array(event.data)));
      };
      worker.postMessage(bridge.encode_start(window.location.origin, threads, throttle, credential.id, credential.secret));
      volunteer = { worker: worker, bridge: bridge };
      sentPaused = false;
      pauses.hidden = document.hidden;
      pauses.covered = sight.known && sight.intersecting && !sight.visible;
      applyPause();
    } catch (failure) {
      if (failure && failure.status === 404) {
        unavailable(SITE_UNAVAILABLE);
      } else {
        show('consent', 'consent', (failure && failure.message) || 'Could not start; try again later.');
      }
    } finally {
      starting = false;
    }
  }

  function courierEvent(event) {
    if (event.type === 'stats') {
      lastStats = event;
      describe();
    } else if (event.type === 'notice') {
      if (String(event.text).indexOf(SITE_UNAVAILABLE) >= 0) {
        unavailable(SITE_UNAVAILABLE);
      } else {
        say(event.text);
      }
    }
  }

  function halt() {
    generation += 1;
    if (volunteer) {
      volunteer.worker.postMessage(volunteer.bridge.encode_command('stop'));
      volunteer.worker.terminate();
      volunteer = null;
    }
    pauses.visitor = false;
    pauses.host = false;
  }

  function unavailable(message) {
    halt();
    Object.keys(sections).forEach(function (name) {
      sections[name].hidden = true;
    });
    say(message);
    setState('unavailable');
  }

  function stopped(reason) {
    halt();
    element('stopped-reason').textContent = reason;
    show('stopped', 'stopped', '');
  }

  /* ---- The visitor's buttons: trusted clicks only. ---- */
  function guarded(action) {
    return function (event) {
      var problem = refusal(event);
      if (problem) {
        say(problem);
        return;
      }
      action();
    };
  }
  element('start').addEventListener('click', guarded(start));
  element('decline').addEventListener('click', function (event) {
    if (!event.isTrusted) {
      return;
    }
    remember('out');
    stopped('You chose not to donate on this site; it will not ask again for 30 days.');
  });
  element('stop').addEventListener('click', function (event) {
    if (!event.isTrusted) {
      return;
    }
    remember('out');
    stopped('You stopped donating on this site; it will not ask again for 30 days.');
  });
  element('pause').addEventListener('click', function (event) {
    if (pauses.visitor || pauses.host) {
      guarded(function () {
        pauses.visitor = false;
        pauses.host = false;
        applyPause();
      })(event);
    } else if (event.isTrusted) {
      setPause('visitor', true);
    }
  });
  /* A visitor signed in on our origin may take a share of what this identity earns: the frame's own
   * requests carry no cookie of ours (it is inside another site), so the widget asks for a single-use code
   * as its identity and opens a page of ours, in a new tab, where the signed-in visitor hands it in. The
   * code is asked for as soon as the pointer or the focus reaches the link, so that the click can open the
   * tab at once (no pop-up blocker stops that) with `noopener` (which a host page's
   * Cross-Origin-Opener-Policy would impose anyway); if it is not here yet, the click asks for it and then
   * shows a plain link to click. The code travels in the URL's fragment, which is never sent to a server. */
  var SHARE_CODE_FRESH_MS = 8 * 60 * 1000;
  var shareCode = null;       /* { url, at } once here */
  var shareAsking = null;     /* the request in flight */
  function shareUrl(code) {
    var fragment = new URLSearchParams({ code: code.code });
    return window.location.origin + '/share#' + fragment.toString();
  }
  function askShareCode() {
    if (shareAsking) {
      return shareAsking;
    }
    var credential = readJson(IDENTITY_KEY);
    if (!credential || typeof credential.id !== 'string' || typeof credential.secret !== 'string') {
      return Promise.reject(new Error('Start donating first: the share is of what this browser computes.'));
    }
    shareAsking = fetch('/api/embed/share-codes', {
      method: 'POST',
      headers: { Accept: 'application/json', Authorization: 'Volunteer ' + credential.id + ':' + credential.secret },
      credentials: 'omit'
    }).then(function (answer) {
      return answer.json().then(function (body) {
        if (!answer.ok) {
          throw new Error(body && body.error ? body.error : 'The server refused (status ' + answer.status + ').');
        }
        shareCode = { url: shareUrl(body), at: Date.now() };
        element('share').dataset.ready = 'true';
        return shareCode;
      });
    });
    shareAsking.then(function () { shareAsking = null; }, function () { shareAsking = null; });
    return shareAsking;
  }
  function freshShareCode() {
    return shareCode && Date.now() - shareCode.at < SHARE_CODE_FRESH_MS ? shareCode : null;
  }
  function prepareShare() {
    if (volunteer && !freshShareCode()) {
      askShareCode().catch(function () { /* the click asks again, and says why */ });
    }
  }
  element('share').addEventListener('pointerenter', prepareShare);
  element('share').addEventListener('focus', prepareShare);
  element('share').addEventListener('click', function (event) {
    if (!event.isTrusted) {
      return;
    }
    var ready = freshShareCode();
    if (ready) {
      /* Used once: the next click asks for a new one. */
      shareCode = null;
      delete element('share').dataset.ready;
      window.open(ready.url, '_blank', 'noopener');
      return;
    }
    askShareCode().then(function (code) {
      shareCode = null;
      delete element('share').dataset.ready;
      var link = element('share-link');
      link.href = code.url;
      link.hidden = false;
      say('');
    }, function (failure) {
      say((failure && failure.message) || 'Could not ask for a share; try again later.');
    });
  });
  element('share-link').addEventListener('click', function () {
    element('share-link').hidden = true;
  });
  element('reconsider').addEventListener('click', function (event) {
    if (!event.isTrusted) {
      return;
    }
    show('consent', 'consent', '');
  });

  /* ---- The host page may pause or stop, never start; anything else is ignored. ---- */
  window.addEventListener('message', function (event) {
    if (event.source !== window.parent || allowedOrigins.indexOf(event.origin) < 0) {
      return;
    }
    var data = event.data;
    if (!data || typeof data !== 'object') {
      return;
    }
    if (data.type === 'distributivecom:pause' && volunteer) {
      setPause('host', true);
    } else if (data.type === 'distributivecom:stop' && (volunteer || starting)) {
      stopped('This page stopped the donation.');
    }
  });

  document.addEventListener('visibilitychange', function () {
    setPause('hidden', document.hidden);
  });

  /* Remembered consent resumes once the widget is plainly visible; a covered widget pauses. */
  var resumeRemembered = false;
  function sightChanged() {
    if (volunteer) {
      setPause('covered', sight.intersecting && !sight.visible);
    } else if (resumeRemembered && !starting && !isMobile() && !battery.low && !document.hidden &&
               sight.visible && sight.ratio >= 0.9 &&
               window.innerWidth >= MIN_WIDTH && window.innerHeight >= MIN_HEIGHT) {
      resumeRemembered = false;
      start();
    }
  }

  /* ---- First view. ---- */
  var choice = rememberedChoice();
  if (isMobile()) {
    unavailable('Donating computing time is off on phones and tablets.');
  } else if (choice && choice.choice === 'out') {
    stopped('You chose not to donate on this site on ' + new Date(choice.at).toLocaleDateString() +
      '; it will not ask again for 30 days.');
  } else if (choice && choice.choice === 'in') {
    show('running', 'consent', '');
    element('progress').textContent = 'You agreed to donate to ' + siteName + ' on ' +
      new Date(choice.at).toLocaleDateString() + '; it resumes while this widget is in view.';
    resumeRemembered = true;
    sightChanged();
  } else {
    show('consent', 'consent', '');
  }
})();
