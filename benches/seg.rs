//! SEG encoding benchmark, the node's side: assembles a series, makes a label map with
//! three segments (three ellipsoids, on the source grid), encodes a BINARY SEG and
//! reports the encoding time and the encoding's own peak memory (the process's peak
//! resident set is reset just before encoding, through /proc/self/clear_refs).
//! Writes labels.u8 and seg.dcm to OUT for the highdicom side. Driven by benches/seg.py.
//!
//! Usage: cargo bench --bench seg -- SERIES_DIR OUT_DIR

use std::path::PathBuf;
use std::time::Instant;

use segnode::cascade::manifest::{Code, Label, Manifest};
use segnode::grid::Grid;
use segnode::seg::{self, SegType};
use segnode::volume::{self, Tolerances};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn current_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let (series, out) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let volume = volume::assemble(&files, 2, &Tolerances::default()).unwrap();
    let [d, h, w] = volume.shape;
    let mut labels = Grid::filled(volume.shape, 0u8);
    let ellipsoids = [
        (1u8, [0.5, 0.5, 0.35], [0.3, 0.25, 0.15]),
        (2, [0.4, 0.45, 0.7], [0.2, 0.15, 0.1]),
        (3, [0.6, 0.6, 0.55], [0.15, 0.1, 0.12]),
    ];
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                let p = [
                    z as f64 / d as f64,
                    y as f64 / h as f64,
                    x as f64 / w as f64,
                ];
                for (value, c, r) in ellipsoids {
                    let q: f64 = (0..3).map(|i| ((p[i] - c[i]) / r[i]).powi(2)).sum();
                    if q <= 1.0 {
                        labels.data[(z * h + y) * w + x] = value;
                    }
                }
            }
        }
    }
    let code = |value: &str, meaning: &str| Code {
        scheme: "SCT".into(),
        value: value.into(),
        meaning: meaning.into(),
    };
    let manifest: Manifest = {
        let label = |value, name: &str, type_code, meaning| Label {
            value,
            name: name.into(),
            category: code("91723000", "Anatomical Structure"),
            kind: code(type_code, meaning),
            modifier: None,
            region: None,
            region_modifier: None,
            color: [200, 100, 100],
        };
        let text = std::fs::read_to_string("onnx/test-cascade/model.toml").unwrap();
        let mut m: Manifest = toml::from_str(&text).unwrap();
        m.labels = vec![
            label(1, "liver", "10200004", "Liver"),
            label(2, "spleen", "78961009", "Spleen"),
            label(3, "pancreas", "15776009", "Pancreas"),
        ];
        m
    };
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("labels.u8"), &labels.data).unwrap();
    // Reset the peak: what follows is the encoding's own.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = current_rss_kib();
    let t = Instant::now();
    let encoded = seg::encode(
        &volume,
        &labels,
        &manifest,
        SegType::Binary,
        &seg::Equipment::segnode("BENCH"),
        "bench",
    )
    .unwrap();
    std::fs::write(out.join("seg.dcm"), &encoded.file).unwrap();
    let seconds = t.elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds,
            "frames": encoded.frames,
            "bytes": encoded.file.len(),
            "peak_extra_mib": (peak.saturating_sub(before)) as f64 / 1024.0,
        })
    );
}
