//! The worker's blob cache: input files fetched once by hash, verified, and kept on disk, least recently
//! used first out once the cache passes its size.
//!
//! A blob is fetched with the capability of the replica that needs it (`GET /blobs/{sha256}?capability=`),
//! no larger than the assignment says, and kept only if its bytes hash to its name. Files are written to a
//! temporary name and renamed, so a file under a hash's name is always whole; on start the cache adopts
//! the files it finds, in the order of their modification times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use distributivecom_protocol::Bytes;
use distributivecom_protocol::is_sha256_hex;
use distributivecom_protocol::worker::BlobRef;
use sha2::{Digest, Sha256};
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
}

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
                // An interrupted write.
                let _ = std::fs::remove_file(entry.path());
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

    /// The blob's bytes: from the cache, or fetched from `server` with the blob's capability and verified.
    pub async fn get(&self, http: &reqwest::Client, server: &str, blob: &BlobRef) -> Result<Bytes, String> {
        if !is_sha256_hex(&blob.sha256) {
            return Err(format!("{:?} is not a blob hash", blob.sha256));
        }
        let gate = {
            let mut fetching = self.fetching.lock().await;
            fetching.entry(blob.sha256.clone()).or_default().clone()
        };
        let only_fetch = gate.lock().await;
        let found = match self.read(&blob.sha256).await {
            Some(bytes) => Ok(bytes),
            None => match fetch(http, server, blob).await {
                Ok(bytes) => {
                    self.keep(&blob.sha256, &bytes).await;
                    Ok(bytes)
                }
                Err(error) => Err(error),
            },
        };
        drop(only_fetch);
        self.fetching.lock().await.remove(&blob.sha256);
        found
    }

    /// A cached blob's bytes, marking it used.
    async fn read(&self, sha256: &str) -> Option<Bytes> {
        {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            state.entries.get_mut(sha256)?.last_used = now;
        }
        match tokio::fs::read(self.dir.join(sha256)).await {
            Ok(bytes) => Some(Bytes(bytes)),
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

    /// Writes a verified blob into the cache (unless it alone is larger than the cache), evicting the
    /// least recently used others until everything fits.
    async fn keep(&self, sha256: &str, bytes: &[u8]) {
        let size = bytes.len() as u64;
        self.lock().fetched_bytes += size;
        if size > self.max_bytes {
            return;
        }
        let temporary = self.dir.join(format!("{sha256}.part"));
        let written = async {
            tokio::fs::write(&temporary, bytes).await?;
            tokio::fs::rename(&temporary, self.dir.join(sha256)).await
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(blob = sha256, %error, "could not keep a blob in the cache");
            let _ = tokio::fs::remove_file(&temporary).await;
            return;
        }
        let evicted = {
            let mut state = self.lock();
            state.clock += 1;
            let last_used = state.clock;
            if state.entries.insert(sha256.to_owned(), Entry { size, last_used }).is_none() {
                state.total += size;
            }
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

/// Downloads a blob, reading no more than its announced size, and checks its hash.
async fn fetch(http: &reqwest::Client, server: &str, blob: &BlobRef) -> Result<Bytes, String> {
    let url = format!("{}/blobs/{}", server.trim_end_matches('/'), blob.sha256);
    let failed = |error: &dyn std::fmt::Display| format!("could not fetch blob {}: {error}", blob.sha256);
    let mut response =
        http.get(&url).query(&[("capability", &blob.capability)]).send().await.map_err(|error| failed(&error))?;
    if !response.status().is_success() {
        return Err(failed(&response.status()));
    }
    let mut bytes = Vec::with_capacity(blob.size.min(64 << 20) as usize);
    while let Some(piece) = response.chunk().await.map_err(|error| failed(&error))? {
        if bytes.len() as u64 + piece.len() as u64 > blob.size {
            return Err(failed(&format_args!("the server sent more than the {} bytes announced", blob.size)));
        }
        bytes.extend_from_slice(&piece);
    }
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != blob.sha256 {
        return Err(format!("the bytes fetched for blob {} hash to {actual}; they were discarded", blob.sha256));
    }
    Ok(Bytes(bytes))
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
        assert_eq!(cache.get(&http, &server, &right).await.unwrap().0, b"not what was asked for");
        assert_eq!(cache.get(&http, &server, &right).await.unwrap().0, b"not what was asked for");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3, "the last one came from the cache");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn the_least_recently_used_blobs_leave_first_and_the_cache_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("blob-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = BlobCache::open(&dir, 10).unwrap();
        let mut changes = cache.subscribe();
        let (a, b, c) = (vec![1u8; 4], vec![2u8; 4], vec![3u8; 4]);
        cache.keep(&sha(&a), &a).await;
        cache.keep(&sha(&b), &b).await;
        assert_eq!(cache.read(&sha(&a)).await.unwrap().0, a, "a is read, so b is now the oldest");
        assert_eq!(cache.recent(1), vec![sha(&a)]);
        cache.keep(&sha(&c), &c).await;
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
        cache.keep(&sha(&too_big), &too_big).await;
        assert!(!dir.join(sha(&too_big)).exists(), "a blob larger than the cache is not kept");

        std::fs::write(dir.join("junk.part"), b"half").unwrap();
        let reopened = BlobCache::open(&dir, 10).unwrap();
        assert_eq!(reopened.sizes().0, 8);
        assert_eq!(reopened.read(&sha(&c)).await.unwrap().0, c);
        assert!(!dir.join("junk.part").exists(), "an interrupted write is cleared on start");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
