//! Headless Chromium volunteers, driven through ChromeDriver (WebDriver) with fantoccini: used by the
//! browser benchmark and by the end-to-end tests. Needs Debian's `chromium` and `chromium-driver`
//! (`cargo xtask setup` installs them).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use distributivecom_protocol::api::VolunteerCredential;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};

/// How long pages and drivers may take to come up.
const PATIENCE: Duration = Duration::from_secs(60);

/// A ChromeDriver process and one Chromium session; both end when this is dropped.
pub struct Chromium {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Chromium {
    /// Kills ChromeDriver's whole process group: ChromeDriver starts Chromium in it, and killing only
    /// ChromeDriver would leave Chromium's processes running (a test run once left 240 behind, using CPU
    /// that the next benchmark measured).
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Chromium {
    /// Starts ChromeDriver on a free port and a headless Chromium session with a fresh profile.
    pub async fn start() -> anyhow::Result<Chromium> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new("chromedriver");
        // Its own process group, which Chromium joins, so that dropping this ends them all.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut driver = command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("could not start chromedriver (install Debian's chromium-driver: cargo xtask setup)")?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        while !reqwest::get(format!("{url}/status")).await.is_ok_and(|response| response.status().is_success()) {
            if Instant::now() > deadline {
                let _ = driver.kill();
                bail!("chromedriver did not start listening on {url}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir()?;
        // Chromium as root needs --no-sandbox; the rest keeps it off the network and quiet.
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1100,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("chromedriver could not start a Chromium session")?;
        Ok(Chromium { client, driver, _profile: profile })
    }

    /// Opens `{server}/donate` in a tab (the first call reuses the session's initial blank tab).
    pub async fn open_donate_page(&self, server: &str) -> anyhow::Result<WindowHandle> {
        let blank = self
            .client
            .execute("return location.href === 'about:blank' || location.href === 'data:,';", vec![])
            .await?;
        let handle = if blank.as_bool().unwrap_or(false) {
            self.client.window().await?
        } else {
            self.client.new_window(true).await?.handle
        };
        self.client.switch_to_window(handle.clone()).await?;
        self.client.goto(&format!("{server}/donate")).await?;
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Id("start"))
            .await
            .context("the donate page did not render")?;
        Ok(handle)
    }

    /// Like [`Chromium::start_volunteering`], volunteering as this identity: it is put where the donate
    /// page keeps the browser's identity just before Start reads it. Tabs of one profile share that
    /// storage, so each tab started this way keeps its own identity.
    pub async fn start_volunteering_as(
        &self,
        tab: &WindowHandle,
        identity: &VolunteerCredential,
        threads: u32,
        throttle_percent: u32,
    ) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        let saved = serde_json::to_string(identity)?;
        self.client
            .execute(
                "localStorage.setItem('distributivecom.volunteer', arguments[0]);",
                vec![serde_json::Value::String(saved)],
            )
            .await?;
        self.start_volunteering(tab, threads, throttle_percent).await
    }

    /// Sets the thread count and the throttle as a visitor would, then presses Start.
    pub async fn start_volunteering(
        &self,
        tab: &WindowHandle,
        threads: u32,
        throttle_percent: u32,
    ) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        self.set_input("threads", &threads.to_string(), "change").await?;
        self.set_input("throttle", &throttle_percent.to_string(), "input").await?;
        self.client.find(Locator::Id("start")).await?.click().await?;
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Id("stop"))
            .await
            .context("Start did not turn into Stop")?;
        Ok(())
    }

    async fn set_input(&self, id: &str, value: &str, event: &str) -> anyhow::Result<()> {
        let script = format!(
            "const input = document.getElementById('{id}'); input.value = '{value}'; \
             input.dispatchEvent(new Event('{event}', {{ bubbles: true }}));"
        );
        self.client.execute(&script, vec![]).await?;
        Ok(())
    }

    /// Opens `{server}{path}` in this tab and waits for the element with id `ready`.
    pub async fn visit(&self, tab: &WindowHandle, url: &str, ready: &str) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        self.client.goto(url).await?;
        self.wait_for(tab, ready).await
    }

    /// Waits until the element with this id is on the tab's page.
    pub async fn wait_for(&self, tab: &WindowHandle, id: &str) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        self.client.wait().at_most(PATIENCE).for_element(Locator::Id(id)).await.with_context(|| format!("no #{id}"))?;
        Ok(())
    }

    /// Types into the input with this id, as a person would (key by key).
    pub async fn type_into(&self, tab: &WindowHandle, id: &str, text: &str) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        let input = self.client.find(Locator::Id(id)).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Clicks the element with this id.
    pub async fn click(&self, tab: &WindowHandle, id: &str) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        self.client.find(Locator::Id(id)).await?.click().await?;
        Ok(())
    }

    /// Runs a script in the tab and returns what it returns.
    pub async fn run_script(&self, tab: &WindowHandle, script: &str) -> anyhow::Result<serde_json::Value> {
        self.client.switch_to_window(tab.clone()).await?;
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// The text of the element with this id in this tab.
    pub async fn text(&self, tab: &WindowHandle, id: &str) -> anyhow::Result<String> {
        self.client.switch_to_window(tab.clone()).await?;
        Ok(self.client.find(Locator::Id(id)).await?.text().await?)
    }

    /// Chooses these files in the `<input type="file">` with this id, as a person picking them would.
    pub async fn choose_files(&self, tab: &WindowHandle, id: &str, paths: &[&Path]) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        let input = self.client.find(Locator::Id(id)).await?;
        // ChromeDriver takes several files as one string of paths, one per line.
        let paths: Vec<String> = paths.iter().map(|path| path.display().to_string()).collect();
        input.send_keys(&paths.join("\n")).await?;
        Ok(())
    }

    /// Runs an asynchronous script in the tab: it calls `arguments[0]` with its answer.
    pub async fn run_async_script(&self, tab: &WindowHandle, script: &str) -> anyhow::Result<serde_json::Value> {
        self.client.switch_to_window(tab.clone()).await?;
        Ok(self.client.execute_async(script, vec![]).await?)
    }

    /// Resizes the browser's window, e.g. to a phone's width for a screenshot.
    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.client.set_window_size(width, height).await?;
        Ok(())
    }

    /// Opens `url` in a new tab and waits for the element with id `ready`.
    pub async fn open_tab(&self, url: &str, ready: &str) -> anyhow::Result<WindowHandle> {
        let handle = self.client.new_window(true).await?.handle;
        self.visit(&handle, url, ready).await?;
        Ok(handle)
    }

    /// Saves a PNG screenshot of the tab.
    pub async fn screenshot(&self, tab: &WindowHandle, path: &Path) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        let png = self.client.screenshot().await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Switches to this tab's top-level page, then into its `index`th frame (an embedded widget): the
    /// `*_in_frame` helpers act there. WebDriver acts in a frame as the browser's user would, whatever its
    /// origin; the page around it cannot.
    async fn enter_frame(&self, tab: &WindowHandle, index: u16) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        self.client.enter_frame(index).await.with_context(|| format!("the page has no frame {index}"))?;
        Ok(())
    }

    /// Runs a script in the tab's `index`th frame and returns what it returns.
    pub async fn run_script_in_frame(
        &self,
        tab: &WindowHandle,
        index: u16,
        script: &str,
    ) -> anyhow::Result<serde_json::Value> {
        self.enter_frame(tab, index).await?;
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Waits until the element with this id is in the tab's `index`th frame.
    pub async fn wait_for_in_frame(&self, tab: &WindowHandle, index: u16, id: &str) -> anyhow::Result<()> {
        self.enter_frame(tab, index).await?;
        self.client.wait().at_most(PATIENCE).for_element(Locator::Id(id)).await.with_context(|| format!("no #{id}"))?;
        Ok(())
    }

    /// Clicks the element with this id in the tab's `index`th frame (WebDriver's element click: a trusted
    /// click where the element is, refused if something else would receive it).
    pub async fn click_in_frame(&self, tab: &WindowHandle, index: u16, id: &str) -> anyhow::Result<()> {
        self.enter_frame(tab, index).await?;
        self.client.find(Locator::Id(id)).await?.click().await?;
        Ok(())
    }

    /// Moves the mouse over the element with this id in the tab's `index`th frame, without clicking.
    pub async fn hover_in_frame(&self, tab: &WindowHandle, index: u16, id: &str) -> anyhow::Result<()> {
        use fantoccini::actions::{InputSource, MouseActions, PointerAction};
        self.enter_frame(tab, index).await?;
        let element = self.client.find(Locator::Id(id)).await?;
        let hover = MouseActions::new("mouse".to_owned()).then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: 0.0,
            y: 0.0,
        });
        self.client.perform_actions(hover).await?;
        self.client.release_actions().await?;
        Ok(())
    }

    /// The text of the element with this id in the tab's `index`th frame.
    pub async fn text_in_frame(&self, tab: &WindowHandle, index: u16, id: &str) -> anyhow::Result<String> {
        self.enter_frame(tab, index).await?;
        Ok(self.client.find(Locator::Id(id)).await?.text().await?)
    }

    /// A real mouse click (pointer down and up, trusted) at a point of the tab's viewport, wherever it
    /// lands: what a visitor lured into clicking there would do, with no check of what is under it.
    pub async fn click_at(&self, tab: &WindowHandle, x: f64, y: f64) -> anyhow::Result<()> {
        use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
        self.client.switch_to_window(tab.clone()).await?;
        let click = MouseActions::new("mouse".to_owned())
            .then(PointerAction::MoveTo { duration: None, x, y })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        self.client.perform_actions(click).await?;
        self.client.release_actions().await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the element with this CSS selector in the tab's page (such as an
    /// embedded widget's frame).
    pub async fn screenshot_element(&self, tab: &WindowHandle, selector: &str, path: &Path) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        let png = self.client.find(Locator::Css(selector)).await?.screenshot().await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Every open tab (to find one that a page opened).
    pub async fn tabs(&self) -> anyhow::Result<Vec<WindowHandle>> {
        Ok(self.client.windows().await?)
    }

    /// Closes a tab and switches to another.
    pub async fn close_tab(&self, tab: &WindowHandle, fall_back_to: &WindowHandle) -> anyhow::Result<()> {
        self.client.switch_to_window(tab.clone()).await?;
        self.client.close_window().await?;
        self.client.switch_to_window(fall_back_to.clone()).await?;
        Ok(())
    }
}
