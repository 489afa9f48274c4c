//! The model store: every global model a member holds, under its SHA-256, and the one rule by
//! which medfl writes a file.
//!
//! A model is named by its hash, so a file is written once and never changed; reading one back
//! checks its bytes against the name (a damaged or substituted file is refused, not used). The
//! coordinator, each hospital and the simulator keep their models here. Every file another
//! process may read while it is written, or that a crash must not tear (models, the ledger inbox
//! and outbox, status files), goes through [`write_atomic`]: a fresh temporary file beside the target (created exclusively,
//! owner-only), fsynced, renamed over the target, and the directory fsynced, so a crash leaves
//! the old file or the new one, never half of one, and a completed write survives power loss.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use medfl_ledger::Hash;
use medfl_model::AutoencoderConfig;
use medfl_protocol::GlobalModel;

/// A directory of models named by hash (`<hash>.model`) and the coordinator's server-optimizer
/// state beside each (`<hash>.state`).
#[derive(Clone, Debug)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// The store in `dir`, created if absent.
    pub fn open(dir: &Path) -> Result<ModelStore> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ModelStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the model `hash` lives.
    pub fn path(&self, hash: &Hash) -> PathBuf {
        self.dir.join(format!("{hash}.model"))
    }

    fn state_path(&self, hash: &Hash) -> PathBuf {
        self.dir.join(format!("{hash}.state"))
    }

    /// Stores `model` (a no-op when the store holds it intact); returns its path.
    pub fn put(&self, model: &GlobalModel) -> Result<PathBuf> {
        let path = self.path(&model.hash);
        let intact = std::fs::read(&path)
            .is_ok_and(|bytes| medfl_protocol::model::sha256(&bytes) == model.hash);
        if !intact {
            write_atomic(&path, &model.to_bytes()?)?;
        }
        Ok(path)
    }

    /// The model `hash` of shape `config`, checked against its name.
    pub fn get(&self, hash: &Hash, config: AutoencoderConfig) -> Result<GlobalModel> {
        let path = self.path(hash);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("model {hash}: {} cannot be read", path.display()))?;
        GlobalModel::from_bytes(&bytes, config, hash)
            .with_context(|| format!("model {hash}: {} is not that model", path.display()))
    }

    /// The model `hash`, of whatever shape its file declares (checked against its name).
    pub fn get_any(&self, hash: &Hash) -> Result<GlobalModel> {
        let path = self.path(hash);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("model {hash}: {} cannot be read", path.display()))?;
        let file = medfl_model::modelfile::ModelFile::from_bytes(&bytes)
            .with_context(|| format!("model {hash}: {} is damaged", path.display()))?;
        GlobalModel::from_bytes(&bytes, file.config, hash)
            .with_context(|| format!("model {hash}: {} is not that model", path.display()))
    }

    /// Stores the server optimizer's state after the round that made model `hash`.
    pub fn put_state(&self, hash: &Hash, state: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = state.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_atomic(&self.state_path(hash), &bytes)
    }

    /// The server optimizer's state stored with model `hash` (empty if none was: FedAvg keeps
    /// none).
    pub fn get_state(&self, hash: &Hash) -> Result<Vec<f32>> {
        match std::fs::read(self.state_path(hash)) {
            Ok(b) if b.len() % 4 == 0 => Ok(b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            Ok(_) => bail!("the server state of model {hash} is damaged"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading the server state of {hash}")),
        }
    }
}

/// Writes `bytes` to `path` so that a crash or a concurrent reader never sees a half-written
/// file under its final name, and a completed write survives power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A fresh, randomly named file (O_EXCL, mode 0600 on Unix): two writers never share one,
    // and no planted symlink is followed.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing beside {}", path.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming to {}", path.display()))?;
    // The rename is durable only once the directory is. Some file systems refuse to sync a
    // directory (EINVAL); the file itself is synced either way, so that is not an error.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: AutoencoderConfig = AutoencoderConfig {
        inputs: 4,
        hidden: 3,
        latent: 2,
    };

    #[test]
    fn a_model_is_stored_once_and_read_back_only_if_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(&dir.path().join("models")).unwrap();
        let model = GlobalModel::initial(SHAPE, 1).unwrap();
        let path = store.put(&model).unwrap();
        assert_eq!(store.get(&model.hash, SHAPE).unwrap(), model);
        assert_eq!(store.get_any(&model.hash).unwrap(), model);
        // Storing it again changes nothing; a damaged file is refused, then repaired by a put.
        store.put(&model).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(store.get(&model.hash, SHAPE).is_err());
        store.put(&model).unwrap();
        assert_eq!(store.get(&model.hash, SHAPE).unwrap(), model);
        // Another model's bytes under this name are refused.
        let other = GlobalModel::initial(SHAPE, 2).unwrap();
        std::fs::write(&path, other.to_bytes().unwrap()).unwrap();
        assert!(store.get(&model.hash, SHAPE).is_err());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("models"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn the_server_state_round_trips_and_a_torn_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let hash = Hash([7; 32]);
        assert_eq!(store.get_state(&hash).unwrap(), Vec::<f32>::new());
        store.put_state(&hash, &[1.5, -2.0]).unwrap();
        assert_eq!(store.get_state(&hash).unwrap(), vec![1.5, -2.0]);
        std::fs::write(dir.path().join(format!("{hash}.state")), [1, 2, 3]).unwrap();
        assert!(store.get_state(&hash).is_err());
    }
}
