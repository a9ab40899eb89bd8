//! Mutational fuzz of the files the trainer reads (`docs/reliability.md`): our checkpoints (the
//! safetensors weights and the JSON record), run configurations (TOML) and ablation grids (TOML).
//! Every case must give a typed error naming the file, or a valid result; a panic fails the test.
//! Cases per format: `GLASSBOX_FUZZ_CASES` (default 2000; `cargo xtask soak` runs more).

use std::path::Path;

use glassbox_trainer::TrainConfig;
use glassbox_trainer::ablate::{GRID_PRESETS, Grid};
use glassbox_trainer::checkpoint::{CheckpointPaths, TrainState, fnv1a64, load, read_state, save};
use tch::nn;

fn fuzz_cases() -> usize {
    std::env::var("GLASSBOX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// xorshift64: the cases are the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break parsers and validators: zero, negative, huge, not a number, wrong type.
const HOSTILE: [&str; 10] = [
    "0",
    "-1",
    "nan",
    "inf",
    "1e309",
    "18446744073709551616",
    "99999999999",
    "\"x\"",
    "[]",
    "0.5",
];

/// One mutation of a text file: bit flips, a cut, a number replaced by a hostile value, a line
/// dropped or doubled, or a key misspelt.
fn mutate_text(text: &str, case: usize, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    let lines: Vec<&str> = text.lines().collect();
    match case % 6 {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        1 => bytes.truncate((case / 6) % bytes.len().max(1)),
        2 => {
            let digits: Vec<usize> = (0..bytes.len())
                .filter(|&i| {
                    bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit())
                })
                .collect();
            if !digits.is_empty() {
                let start = digits[rng.below(digits.len())];
                let end = (start..bytes.len())
                    .find(|&i| !(bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'e'))
                    .unwrap_or(bytes.len());
                let value = HOSTILE[rng.below(HOSTILE.len())];
                bytes.splice(start..end, value.bytes());
            }
        }
        3 | 4 => {
            let i = rng.below(lines.len());
            let mut kept: Vec<&str> = lines.clone();
            if case % 6 == 3 {
                kept.remove(i);
            } else {
                kept.insert(i, lines[i]);
            }
            bytes = kept.join("\n").into_bytes();
        }
        _ => {
            let keys: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains(" = "))
                .map(|(i, _)| i)
                .collect();
            if !keys.is_empty() {
                let i = keys[rng.below(keys.len())];
                let misspelt = lines[i].replacen('_', "", 1).replacen('e', "a", 1);
                let mut changed = lines.clone();
                changed[i] = &misspelt;
                bytes = changed.join("\n").into_bytes();
            }
        }
    }
    bytes
}

fn assert_names(err: &dyn std::fmt::Display, path: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "the error does not name {}: {text}",
        path.display()
    );
}

#[test]
fn mutated_run_configs_and_grids_give_an_error_naming_the_file_or_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let cases = fuzz_cases();
    let seeds: Vec<String> = ["default", "test", "sevenscenes", "segmentation"]
        .iter()
        .filter_map(|p| TrainConfig::preset(p).ok())
        .map(|c| c.to_toml().unwrap())
        .collect();
    let path = dir.path().join("config.toml");
    let (mut ok, mut refused) = (0, 0);
    for case in 0..cases {
        let seed = &seeds[case % seeds.len()];
        std::fs::write(&path, mutate_text(seed, case / seeds.len(), &mut rng)).unwrap();
        match TrainConfig::from_file(&path) {
            Ok(config) => {
                config.validate().unwrap();
                ok += 1;
            }
            Err(e) => {
                assert_names(&e, &path);
                refused += 1;
            }
        }
    }
    let path = dir.path().join("grid.toml");
    let (mut grids_ok, mut grids_refused) = (0, 0);
    for case in 0..cases {
        let (_, seed) = GRID_PRESETS[case % GRID_PRESETS.len()];
        let bytes = mutate_text(seed, case / GRID_PRESETS.len(), &mut rng);
        std::fs::write(&path, bytes).unwrap();
        match Grid::load(path.to_str().unwrap()) {
            Ok(grid) => {
                grid.plan().unwrap();
                grids_ok += 1;
            }
            Err(e) => {
                assert_names(&e, &path);
                grids_refused += 1;
            }
        }
    }
    eprintln!(
        "run configs: {cases} cases, {ok} valid, {refused} refused; grids: {cases} cases, \
         {grids_ok} valid, {grids_refused} refused"
    );
    assert!(refused > cases / 4 && grids_refused > cases / 4);
}

fn test_store() -> (TrainConfig, nn::VarStore) {
    let config = TrainConfig::preset("test").unwrap();
    // Seeded, so the checkpoint (and its record's checksum digits) is the same on every run.
    tch::manual_seed(0);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    glassbox_dpt::Dpt::new(&vs.root(), &config.model).unwrap();
    (config, vs)
}

/// One mutation of a safetensors file: bit flips, a cut, the header length (first 8 bytes) set
/// to a hostile value, or a dtype, shape or offset in the JSON header changed.
fn mutate_safetensors(seed: &[u8], case: usize, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    let header_len = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    match case % 5 {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        1 => bytes.truncate((case / 5 * 7919) % bytes.len()),
        2 => {
            let values = [
                0u64,
                1,
                7,
                header_len as u64 - 1,
                u64::MAX,
                1 << 40,
                bytes.len() as u64,
            ];
            bytes[..8].copy_from_slice(&values[rng.below(values.len())].to_le_bytes());
        }
        _ => {
            // Inside the JSON header: a dtype swapped, or a number (shape or offset) replaced.
            let header = String::from_utf8_lossy(&seed[8..8 + header_len]).into_owned();
            let changed = if case % 5 == 3 {
                let dtypes = ["F16", "BF16", "F64", "I64", "U8", "BOOL", "X9"];
                header.replacen(
                    "\"F32\"",
                    &format!("\"{}\"", dtypes[rng.below(dtypes.len())]),
                    1 + rng.below(3),
                )
            } else {
                String::from_utf8_lossy(&mutate_text(&header, 2, rng)).into_owned()
            };
            let mut out = (changed.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(changed.as_bytes());
            out.extend_from_slice(&seed[8 + header_len..]);
            bytes = out;
        }
    }
    bytes
}

#[test]
fn mutated_checkpoints_give_an_error_naming_the_file_or_load_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut vs) = test_store();
    let paths = CheckpointPaths::new(dir.path(), "last");
    let state = TrainState {
        step: 3,
        seed: 1,
        loss: 0.5,
        best_abs_rel: None,
        best_miou: None,
        seconds: 1.0,
        weights_checksum: 0,
        optimizer_checksum: None,
    };
    let state = save(&paths, &vs, None, &state).unwrap();
    let weights = std::fs::read(&paths.weights).unwrap();
    let record = std::fs::read_to_string(&paths.record).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cases = fuzz_cases();
    let (mut loaded, mut checksum, mut parse) = (0, 0, 0);
    for case in 0..cases {
        let bytes = mutate_safetensors(&weights, case, &mut rng);
        std::fs::write(&paths.weights, &bytes).unwrap();
        // Every other case gets a record whose checksum matches, so the parser is reached.
        let mut s = state.clone();
        if case % 2 == 0 {
            s.weights_checksum = fnv1a64(&bytes);
        }
        std::fs::write(&paths.record, serde_json::to_vec(&s).unwrap()).unwrap();
        match load(&paths, &mut vs) {
            Ok(_) => loaded += 1,
            Err(e) => {
                assert_names(&e, &paths.weights);
                if e.to_string().contains("checksum") {
                    checksum += 1;
                } else {
                    parse += 1;
                }
            }
        }
    }
    std::fs::write(&paths.weights, &weights).unwrap();
    let (mut records_ok, mut records_refused) = (0, 0);
    for case in 0..cases {
        std::fs::write(&paths.record, mutate_text(&record, case, &mut rng)).unwrap();
        match read_state(&paths).and_then(|_| load(&paths, &mut vs)) {
            Ok(_) => records_ok += 1,
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("last.json") || text.contains("last.safetensors"),
                    "an unnamed checkpoint error: {text}"
                );
                records_refused += 1;
            }
        }
    }
    eprintln!(
        "checkpoint weights: {cases} cases, {loaded} loaded, {checksum} refused by checksum, \
         {parse} refused by the parser or the shape check; records: {cases} cases, {records_ok} \
         loaded, {records_refused} refused"
    );
    assert!(parse > 0 && checksum > 0);
}

/// The pinned Python peer's small random-init HF `DPTForDepthEstimation`: `model.safetensors`
/// (HF names) and `config.json`.
fn hf_checkpoint() -> tempfile::TempDir {
    let python = std::env::var("GLASSBOX_PYTHON")
        .expect("GLASSBOX_PYTHON is not set: run the tests through `cargo xtask test`");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests-python/dpt_reference.py");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .args(["--batch", "1", "--input", "32"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[test]
fn mutated_hf_checkpoints_and_configs_give_a_typed_error_or_load_whole() {
    let hf = hf_checkpoint();
    let config_text = std::fs::read_to_string(hf.path().join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&config_text).unwrap();
    let config = glassbox_dpt::DptConfig::from_hf_config(&json).unwrap();
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    glassbox_dpt::Dpt::new(&vs.root(), &config).unwrap();
    let weights = std::fs::read(hf.path().join("model.safetensors")).unwrap();
    let path = hf.path().join("mutated.safetensors");
    let mut rng = Rng(0xd1b5_4a32_d192_ed03);
    let cases = fuzz_cases();
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..cases {
        std::fs::write(&path, mutate_safetensors(&weights, case, &mut rng)).unwrap();
        match glassbox_dpt::import::load_hf_dpt(&mut vs, &path) {
            Ok(_) => loaded += 1,
            Err(e) => {
                assert_names(&e, &path);
                refused += 1;
            }
        }
    }
    let (mut configs_ok, mut configs_refused) = (0, 0);
    for case in 0..cases {
        let bytes = mutate_text(&config_text, case, &mut rng);
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                glassbox_dpt::DptConfig::from_hf_config(&json).map_err(|e| e.to_string())
            })
            .and_then(|config| config.validate().map_err(|e| e.to_string()));
        match parsed {
            Ok(()) => configs_ok += 1,
            Err(message) => {
                assert!(!message.is_empty());
                configs_refused += 1;
            }
        }
    }
    eprintln!(
        "HF weights: {cases} cases, {loaded} loaded, {refused} refused; HF config.json: {cases} \
         cases, {configs_ok} valid, {configs_refused} refused"
    );
    assert!(refused > cases / 4 && configs_refused > cases / 4);
}
