/* Distributivecom embed script (static/embed.js, served at /embed.js): a site pastes
 *   <script src="https://HOST/embed.js" data-site="KEY" async></script>
 * and this injects ONE sandboxed iframe from HOST, in place of the script tag. Everything else (the consent
 * widget, the volunteer, what it may do) lives inside that frame, which the host page cannot read, restyle
 * from the inside or click. Options, each bounded here and again by the server and the frame:
 *   data-throttle  share of a CPU core each thread may use, percent: 10 to 50, default 30;
 *   data-threads   threads: 1 or 2, default 1.
 * The frame is at least 320 x 200 pixels. Nothing can skip the visitor's consent. The frame tells the host page its state with postMessage,
 * {type: "distributivecom:state", state: "consent" | "running" | "paused" | "stopped" | "unavailable"},
 * re-sent here as a "distributivecom:state" event on the iframe; the host page may post
 * {type: "distributivecom:pause"} or {type: "distributivecom:stop"} to the frame, and nothing else. See
 * docs/embed.md. No dependencies, no globals. */
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script || !script.src || !script.parentNode) {
    return;
  }
  var ours = new URL(script.src).origin;
  var site = script.getAttribute('data-site') || '';
  if (!/^site_[A-Za-z0-9_-]{43}$/.test(site)) {
    if (window.console) {
      console.warn('Distributivecom: data-site is missing or is not a site key; the widget is not shown.');
    }
    return;
  }

  /* A whole number within [min, max]; anything else gives the default. */
  function bounded(value, min, max, fallback) {
    if (!/^\s*\d{1,9}\s*$/.test(value || '')) {
      return fallback;
    }
    return Math.min(max, Math.max(min, parseInt(value, 10)));
  }
  var throttle = bounded(script.getAttribute('data-throttle'), 10, 50, 30);
  var threads = bounded(script.getAttribute('data-threads'), 1, 2, 1);

  var frame = document.createElement('iframe');
  frame.src = ours + '/embed/frame?site=' + encodeURIComponent(site) + '&throttle=' + throttle +
    '&threads=' + threads + '&origin=' + encodeURIComponent(location.origin);
  /* allow-scripts: the widget is a script. allow-same-origin: the frame keeps its own origin (ours), so it
   * has its own storage (consent, opt-out) and may start its Web Workers and reach our API; it is still
   * cross-origin to the host, which therefore cannot reach into it. allow-popups: the "Distributivecom"
   * link opens our site in a new tab; allow-popups-to-escape-sandbox: that tab is an ordinary page of our
   * site (its forms work), not a sandboxed one. Nothing else: no navigation of the host page, no forms or
   * modal dialogs in the widget, no downloads, no pointer lock. */
  frame.setAttribute('sandbox', 'allow-scripts allow-same-origin allow-popups allow-popups-to-escape-sandbox');
  frame.setAttribute('title', 'Donate computing time to this site (Distributivecom)');
  frame.setAttribute('loading', 'eager');
  frame.setAttribute('referrerpolicy', 'origin');
  frame.style.cssText = 'display:block;box-sizing:border-box;width:100%;max-width:480px;min-width:320px;' +
    'height:200px;min-height:200px;border:1px solid #c3c9d2;border-radius:8px;background:#fff;';
  script.parentNode.insertBefore(frame, script.nextSibling);

  var states = ['consent', 'running', 'paused', 'stopped', 'unavailable'];
  window.addEventListener('message', function (event) {
    if (event.origin !== ours || event.source !== frame.contentWindow) {
      return;
    }
    var data = event.data;
    if (!data || data.type !== 'distributivecom:state' || states.indexOf(data.state) < 0) {
      return;
    }
    frame.setAttribute('data-state', data.state);
    var detail = { state: data.state };
    var changed;
    try {
      changed = new CustomEvent('distributivecom:state', { detail: detail, bubbles: true });
    } catch (old) {
      return;
    }
    frame.dispatchEvent(changed);
  });
})();
