//! The worker's blob cache: input files fetched once by hash, verified, and kept on disk, least recently
//! used first out once the cache passes its size.
//!
//! A blob is fetched with the capability of the replica that needs it (`GET /blobs/{sha256}?capability=`),
//! no larger than the assignment says, and kept only if its bytes hash to its name. Files are written to a
//! temporary name (unique, so several workers may share the directory) and renamed, so a file under a
//! hash's name is always whole; on start the cache adopts the files it finds, in the order of their
//! modification times. A replica holds its blobs as open files until it runs, never as bytes in memory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use distributivecom_protocol::is_sha256_hex;
use distributivecom_protocol::worker::BlobRef;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Blobs kept on disk, within a size.
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// One fetch per blob at a time: replicas that need a blob being fetched wait for it.
    fetching: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where to tell what the cache gained and lost (the current connection, which tells the server).
    changes: Mutex<Option<mpsc::UnboundedSender<Change>>>,
    next_temporary: std::sync::atomic::AtomicU64,
}

/// How the names of downloads in progress end.
const PARTIAL: &str = ".part";
/// A download in progress that has not been touched for this long was left by a process that is gone.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Blobs the cache gained and lost.
pub type Change = (Vec<String>, Vec<String>);

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
    fetched_bytes: u64,
}

struct Entry {
    size: u64,
    last_used: u64,
}

impl BlobCache {
    /// Opens the cache in `dir` (created if missing), keeping at most `max_bytes` there.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<BlobCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let metadata = entry.metadata()?;
            if !metadata.is_file() {
                continue;
            }
            if !is_sha256_hex(&name) {
                // A download in progress, perhaps by another worker sharing the directory: removed only
                // once it is clearly abandoned.
                let abandoned = metadata.modified().ok().and_then(|at| at.elapsed().ok());
                if !name.ends_with(PARTIAL) || abandoned.is_none_or(|age| age > ABANDONED_AFTER) {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            found.push((metadata.modified().ok(), name, metadata.len()));
        }
        found.sort();
        let cache = BlobCache {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(HashMap::new()),
            changes: Mutex::new(None),
            next_temporary: std::sync::atomic::AtomicU64::new(0),
        };
        {
            let mut state = cache.lock();
            for (_, name, size) in found {
                state.clock += 1;
                let last_used = state.clock;
                state.total += size;
                state.entries.insert(name, Entry { size, last_used });
            }
            cache.evict(&mut state, None);
        }
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The hashes of the blobs in the cache.
    pub fn held(&self) -> Vec<String> {
        self.lock().entries.keys().cloned().collect()
    }

    /// The hashes of the `limit` most recently used blobs, most recent first.
    pub fn recent(&self, limit: usize) -> Vec<String> {
        let state = self.lock();
        let mut entries: Vec<(&String, &Entry)> = state.entries.iter().collect();
        entries.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.last_used));
        entries.into_iter().take(limit).map(|(name, _)| name.clone()).collect()
    }

    /// From now on, what the cache gains and loses is sent here (and no longer to an earlier receiver).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sender);
        receiver
    }

    fn tell(&self, added: Vec<String>, evicted: Vec<String>) {
        if added.is_empty() && evicted.is_empty() {
            return;
        }
        if let Some(sender) = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
            let _ = sender.send((added, evicted));
        }
    }

    /// The bytes in the cache, and the bytes fetched from servers since start.
    pub fn sizes(&self) -> (u64, u64) {
        let state = self.lock();
        (state.total, state.fetched_bytes)
    }

    /// The blob's file, opened: from the cache, or fetched from `server` with the blob's capability and
    /// verified. The bytes stay on disk until the replica runs; an open file outlives its eviction (and a
    /// blob larger than the whole cache is kept only as an open file whose name is already gone).
    pub async fn get(&self, http: &reqwest::Client, server: &str, blob: &BlobRef) -> Result<std::fs::File, String> {
        if !is_sha256_hex(&blob.sha256) {
            return Err(format!("{:?} is not a blob hash", blob.sha256));
        }
        let gate = {
            let mut fetching = self.fetching.lock().await;
            fetching.entry(blob.sha256.clone()).or_default().clone()
        };
        let only_fetch = gate.lock().await;
        let found = match self.open_cached(&blob.sha256) {
            Some(file) => Ok(file),
            None => self.fetch(http, server, blob).await,
        };
        drop(only_fetch);
        let mut fetching = self.fetching.lock().await;
        // Only the last one out removes the gate, and only its own: a replica still waiting holds it.
        if fetching
            .get(&blob.sha256)
            .is_some_and(|current| Arc::ptr_eq(current, &gate) && Arc::strong_count(&gate) == 2)
        {
            fetching.remove(&blob.sha256);
        }
        found
    }

    /// Every one of these blobs' files, opened, if each is in the cache now (fetching none).
    pub fn open_all(&self, blobs: &BTreeMap<String, BlobRef>) -> Option<Vec<(String, std::fs::File)>> {
        blobs
            .iter()
            .map(|(path, blob)| {
                let file = is_sha256_hex(&blob.sha256).then(|| self.open_cached(&blob.sha256)).flatten()?;
                Some((path.clone(), file))
            })
            .collect()
    }

    /// A cached blob's file, opened, marking it used; `None` (and the entry forgotten) if it is gone or
    /// has another size than it had when kept.
    fn open_cached(&self, sha256: &str) -> Option<std::fs::File> {
        let size = {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            let entry = state.entries.get_mut(sha256)?;
            entry.last_used = now;
            entry.size
        };
        let opened = std::fs::File::open(self.dir.join(sha256)).and_then(|file| {
            let length = file.metadata()?.len();
            if length == size { Ok(file) } else { Err(std::io::Error::other(format!("{length} bytes, not {size}"))) }
        });
        match opened {
            Ok(file) => Some(file),
            Err(error) => {
                tracing::warn!(blob = sha256, %error, "a cached blob could not be read; fetching it again");
                self.forget(sha256);
                None
            }
        }
    }

    fn forget(&self, sha256: &str) {
        let removed = {
            let mut state = self.lock();
            state.entries.remove(sha256).map(|entry| state.total -= entry.size).is_some()
        };
        if removed {
            self.tell(Vec::new(), vec![sha256.to_owned()]);
        }
    }

    /// A name for a download in progress, unique within this process and across processes sharing the
    /// directory.
    fn temporary_path(&self, sha256: &str) -> PathBuf {
        let number = self.next_temporary.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("{sha256}.{}.{number}{PARTIAL}", std::process::id()))
    }

    /// Downloads a blob to a temporary file, checks it, and keeps it.
    async fn fetch(&self, http: &reqwest::Client, server: &str, blob: &BlobRef) -> Result<std::fs::File, String> {
        let temporary = self.temporary_path(&blob.sha256);
        let fetched = download(http, server, blob, &temporary).await;
        let opened = fetched.and_then(|()| {
            std::fs::File::open(&temporary).map_err(|error| format!("could not read blob {}: {error}", blob.sha256))
        });
        match opened {
            Ok(file) => {
                self.keep(&blob.sha256, &temporary, file.metadata().map_or(0, |metadata| metadata.len())).await;
                Ok(file)
            }
            Err(error) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                Err(error)
            }
        }
    }

    /// Moves a verified blob's file into the cache (unless it alone is larger than the cache, when it is
    /// removed: whoever opened it still reads it), evicting the least recently used others until
    /// everything fits.
    async fn keep(&self, sha256: &str, temporary: &Path, size: u64) {
        self.lock().fetched_bytes += size;
        if size > self.max_bytes {
            let _ = tokio::fs::remove_file(temporary).await;
            return;
        }
        if let Err(error) = tokio::fs::rename(temporary, self.dir.join(sha256)).await {
            tracing::warn!(blob = sha256, %error, "could not keep a blob in the cache");
            let _ = tokio::fs::remove_file(temporary).await;
            return;
        }
        let evicted = {
            let mut state = self.lock();
            state.clock += 1;
            let last_used = state.clock;
            if let Some(previous) = state.entries.insert(sha256.to_owned(), Entry { size, last_used }) {
                state.total -= previous.size;
            }
            state.total += size;
            self.evict(&mut state, Some(sha256))
        };
        self.tell(vec![sha256.to_owned()], evicted);
    }

    /// Removes least recently used blobs (never `keep`) until the cache is within its size; returns them.
    fn evict(&self, state: &mut State, keep: Option<&str>) -> Vec<String> {
        let mut evicted = Vec::new();
        while state.total > self.max_bytes {
            let victim = state
                .entries
                .iter()
                .filter(|(name, _)| Some(name.as_str()) != keep)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(name, _)| name.clone());
            let Some(victim) = victim else { break };
            if let Some(entry) = state.entries.remove(&victim) {
                state.total -= entry.size;
            }
            let _ = std::fs::remove_file(self.dir.join(&victim));
            evicted.push(victim);
        }
        evicted
    }
}

/// Downloads a blob into `path`, reading no more than its announced size, and checks its hash; bytes
/// with another hash are refused (the caller removes the file).
async fn download(http: &reqwest::Client, server: &str, blob: &BlobRef, path: &Path) -> Result<(), String> {
    let url = format!("{}/blobs/{}", server.trim_end_matches('/'), blob.sha256);
    let failed = |error: &dyn std::fmt::Display| format!("could not fetch blob {}: {error}", blob.sha256);
    let mut response =
        http.get(&url).query(&[("capability", &blob.capability)]).send().await.map_err(|error| failed(&error))?;
    if !response.status().is_success() {
        return Err(failed(&response.status()));
    }
    let mut file = tokio::fs::File::create(path).await.map_err(|error| failed(&error))?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(piece) = response.chunk().await.map_err(|error| failed(&error))? {
        received += piece.len() as u64;
        if received > blob.size {
            return Err(failed(&format_args!("the server sent more than the {} bytes announced", blob.size)));
        }
        hasher.update(&piece);
        file.write_all(&piece).await.map_err(|error| failed(&error))?;
    }
    file.sync_data().await.map_err(|error| failed(&error))?;
    let actual = hex::encode(hasher.finalize());
    if actual != blob.sha256 {
        return Err(format!("the bytes fetched for blob {} hash to {actual}; they were discarded", blob.sha256));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on a loopback port that answers every request with `body`, and counts the requests.
    async fn serve_always(body: &'static [u8]) -> (String, Arc<std::sync::atomic::AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = vec![0; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
            }
        });
        (format!("http://{address}"), requests)
    }

    #[tokio::test]
    async fn bytes_with_the_wrong_hash_are_discarded_and_the_fetch_fails() {
        let dir = std::env::temp_dir().join(format!("blob-cache-forged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = BlobCache::open(&dir, 1 << 20).unwrap();
        let (server, requests) = serve_always(b"not what was asked for").await;
        let http = reqwest::Client::new();
        let wanted = BlobRef { sha256: sha(b"the real bytes"), size: 100, capability: "1.x".into() };
        let error = cache.get(&http, &server, &wanted).await.unwrap_err();
        assert!(error.contains("they were discarded"), "{error}");
        assert!(cache.held().is_empty(), "nothing is kept");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing is written");
        // More bytes than announced are refused too.
        let short = BlobRef { sha256: sha(b"not what was asked for"), size: 5, capability: "1.x".into() };
        let error = cache.get(&http, &server, &short).await.unwrap_err();
        assert!(error.contains("more than the 5 bytes announced"), "{error}");
        // The right bytes are kept, and served from the cache next time.
        let right = BlobRef { sha256: sha(b"not what was asked for"), size: 100, capability: "1.x".into() };
        assert_eq!(contents(cache.get(&http, &server, &right).await.unwrap()), b"not what was asked for");
        assert_eq!(contents(cache.get(&http, &server, &right).await.unwrap()), b"not what was asked for");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3, "the last one came from the cache");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn contents(mut file: std::fs::File) -> Vec<u8> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        bytes
    }

    /// Keeps `bytes` as a fetch would, once they are verified.
    async fn put(cache: &BlobCache, bytes: &[u8]) {
        let temporary = cache.temporary_path(&sha(bytes));
        std::fs::write(&temporary, bytes).unwrap();
        cache.keep(&sha(bytes), &temporary, bytes.len() as u64).await;
    }

    fn read(cache: &BlobCache, bytes: &[u8]) -> Vec<u8> {
        contents(cache.open_cached(&sha(bytes)).unwrap())
    }

    #[tokio::test]
    async fn the_least_recently_used_blobs_leave_first_and_the_cache_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("blob-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = BlobCache::open(&dir, 10).unwrap();
        let mut changes = cache.subscribe();
        let (a, b, c) = (vec![1u8; 4], vec![2u8; 4], vec![3u8; 4]);
        put(&cache, &a).await;
        put(&cache, &b).await;
        assert_eq!(read(&cache, &a), a, "a is read, so b is now the oldest");
        assert_eq!(cache.recent(1), vec![sha(&a)]);
        put(&cache, &c).await;
        assert_eq!(changes.try_recv().unwrap(), (vec![sha(&a)], vec![]));
        assert_eq!(changes.try_recv().unwrap(), (vec![sha(&b)], vec![]));
        assert_eq!(changes.try_recv().unwrap(), (vec![sha(&c)], vec![sha(&b)]), "the server hears of evictions");
        let mut held = cache.held();
        held.sort();
        let mut expected = vec![sha(&a), sha(&c)];
        expected.sort();
        assert_eq!(held, expected);
        assert!(!dir.join(sha(&b)).exists(), "an evicted blob's file is removed");
        assert_eq!(cache.sizes(), (8, 12));

        let too_big = vec![4u8; 11];
        put(&cache, &too_big).await;
        assert!(!dir.join(sha(&too_big)).exists(), "a blob larger than the cache is not kept");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "nor is its download");

        // A download in progress (perhaps by another worker sharing the directory) stays; junk goes.
        let downloading = dir.join("in-progress.part");
        std::fs::write(&downloading, b"half").unwrap();
        std::fs::write(dir.join("junk"), b"?").unwrap();
        // A blob file whose size changed behind the cache's back is fetched again, not used.
        let file = std::fs::OpenOptions::new().append(true).open(dir.join(sha(&a))).unwrap();
        std::io::Write::write_all(&mut &file, b"tampered").unwrap();
        assert!(cache.open_cached(&sha(&a)).is_none());
        assert_eq!(cache.held(), vec![sha(&c)]);
        let reopened = BlobCache::open(&dir, 100).unwrap();
        assert_eq!(read(&reopened, &c), c);
        assert!(downloading.exists(), "a recent download in progress is left alone");
        assert!(!dir.join("junk").exists(), "junk is cleared on start");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
