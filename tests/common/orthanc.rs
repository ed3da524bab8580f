//! Orthanc from Debian's package as the PACS of a test: started on ports of the test's
//! choosing with segnode as a modality, and reached through its REST API with curl.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{KillOnDrop, free_port};

pub struct Orthanc {
    _child: KillOnDrop,
    pub http: u16,
}

/// Orthanc's DICOMweb plugin, as Debian's orthanc-dicomweb installs it.
pub const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

pub fn curl(args: &[&str]) -> String {
    let out = Command::new("/usr/bin/curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Orthanc on `dicom` with segnode as the modality `segnode` (`modality`: Orthanc's
/// modality entry) and `extra` merged into its configuration.
pub fn start_orthanc(
    dir: &Path,
    dicom: u16,
    modality: serde_json::Value,
    extra: serde_json::Value,
) -> Orthanc {
    let binary = Path::new("/usr/sbin/Orthanc");
    assert!(
        binary.exists(),
        "Orthanc not found: install Debian's orthanc (scripts/setup)"
    );
    assert!(
        Path::new("/usr/bin/curl").exists(),
        "curl not found (scripts/setup)"
    );
    let http = extra["HttpPort"]
        .as_u64()
        .map_or_else(free_port, |p| u16::try_from(p).unwrap());
    std::fs::write(
        dir.join("route.lua"),
        "function OnStableSeries(seriesId, tags, metadata)\n\
           if tags['Modality'] == 'CT' then\n\
             RestApiPost('/modalities/segnode/store', seriesId)\n\
           end\n\
         end\n",
    )
    .unwrap();
    let mut config = serde_json::json!({
        "Name": "segnode-test",
        "StorageDirectory": dir.join("storage"),
        "IndexDirectory": dir.join("index"),
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "StableAge": 2,
        "Plugins": [],
        "DicomModalities": { "segnode": modality },
        "LuaScripts": [dir.join("route.lua")],
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    let path = dir.join("orthanc.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
    let child = Command::new(binary)
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let orthanc = Orthanc {
        _child: KillOnDrop(child),
        http,
    };
    for _ in 0..100 {
        if Command::new("/usr/bin/curl")
            // Up when it answers at all (401 where authentication is enabled).
            .args([
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://127.0.0.1:{http}/system"),
            ])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return orthanc;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "Orthanc did not start: {}",
        std::fs::read_to_string(dir.join("orthanc.log")).unwrap_or_default()
    );
}

/// The study's series of `modality`, expanded.
pub fn series_of(base: &str, study: &str, modality: &str) -> Vec<serde_json::Value> {
    let series: Vec<serde_json::Value> =
        serde_json::from_str(&curl(&[&format!("{base}/studies/{study}/series?expand")])).unwrap();
    series
        .into_iter()
        .filter(|s| s["MainDicomTags"]["Modality"] == modality)
        .collect()
}
