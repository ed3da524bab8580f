//! The configuration's tests: loading, validation, overrides, the offline model.
use super::*;

#[test]
fn the_operating_guide_names_every_environment_override() {
    let guide = include_str!("../../docs/operating.md");
    for (name, key) in ENV_OVERRIDES {
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/operating.md lacks {name} ({key})"
        );
    }
}

const MINIMAL: &str = r#"
    [node]
    ae_title = "SEGNODE"
    data_dir = "/tmp/segnode"
    [dicom]
    listen = "127.0.0.1:11112"
    [[dicom.allowed_peers]]
    ae_title = "ORTHANC"
    host = "127.0.0.1"
    [[dicom.allowed_peers]]
    ae_title = "STORESCU"
"#;

/// `segnode run --model DIR` runs the folder given, with the configuration's other
/// `[model]` options when there is a configuration file, else the defaults and
/// `ORT_DYLIB_PATH`; without `--model`, the configured model, if any.
#[test]
fn the_offline_model_is_the_folder_given_or_the_configured_one() {
    let env = BTreeMap::from([("ORT_DYLIB_PATH".to_string(), "/lib/ort.so".to_string())]);
    let missing = Path::new("/nonexistent/segnode.toml");
    let given = offline(missing, Some(PathBuf::from("onnx/m")), &env)
        .unwrap()
        .model
        .unwrap();
    assert_eq!(given.path, PathBuf::from("onnx/m"));
    assert_eq!(given.onnxruntime, Some(PathBuf::from("/lib/ort.so")));
    assert!(offline(missing, None, &env).unwrap().model.is_none());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("segnode.toml");
    let model = "[model]\npath = \"onnx/configured\"\nintra_threads = 3\n";
    std::fs::write(&file, format!("{MINIMAL}\n{model}")).unwrap();
    let configured = offline(&file, None, &BTreeMap::new())
        .unwrap()
        .model
        .unwrap();
    assert_eq!(
        (configured.path.as_path(), configured.intra_threads),
        (Path::new("onnx/configured"), 3)
    );
    let over = offline(&file, Some(PathBuf::from("onnx/m")), &BTreeMap::new())
        .unwrap()
        .model
        .unwrap();
    assert_eq!(
        (over.path.as_path(), over.intra_threads),
        (Path::new("onnx/m"), 3)
    );
}

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/segnode.toml");
    let cfg = Config::load(&path, &BTreeMap::new()).unwrap();
    assert_eq!(cfg.ae_title.as_str(), "SEGNODE");
}

#[test]
fn defaults_and_derived_paths() {
    let cfg = Config::from_toml(MINIMAL, &BTreeMap::new()).unwrap();
    assert_eq!(
        cfg.database,
        Database::Sqlite(PathBuf::from("/tmp/segnode/segnode.db"))
    );
    assert_eq!(cfg.stable_age, Duration::from_secs(10));
    assert_eq!(cfg.eligibility.modalities, vec!["CT"]);
    assert_eq!(cfg.dicom.max_object_bytes, 2048 * 1024 * 1024);
    assert_eq!(cfg.review.hold, Hold::Never);
    assert!(cfg.review.deliver_failed_organs);
}

#[test]
fn review_holds_what_it_says() {
    use crate::quality::Verdict;
    let review = |hold: &str| {
        Config::from_toml(
            &format!("{MINIMAL}\n[review]\nhold = \"{hold}\"\n"),
            &BTreeMap::new(),
        )
        .map(|c| c.review)
    };
    let flagged = review("flagged").unwrap();
    assert!(!flagged.holds(Some(Verdict::Ok)) && !flagged.holds(None));
    assert!(flagged.holds(Some(Verdict::Warn)) && flagged.holds(Some(Verdict::Fail)));
    assert!(review("always").unwrap().holds(None));
    assert!(!review("never").unwrap().holds(Some(Verdict::Fail)));
    assert!(matches!(
        review("sometimes"),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn failed_organs_can_be_left_out_with_or_without_a_hold() {
    let review = |table: &str| {
        Config::from_toml(&format!("{MINIMAL}\n[review]\n{table}"), &BTreeMap::new())
            .unwrap()
            .review
    };
    let left_out = review("deliver_failed_organs = false\n");
    assert_eq!(
        (left_out.hold, left_out.deliver_failed_organs),
        (Hold::Never, false)
    );
    let both = review("hold = \"flagged\"\ndeliver_failed_organs = false\n");
    assert_eq!(
        (both.hold, both.deliver_failed_organs),
        (Hold::Flagged, false)
    );
    assert!(review("hold = \"always\"\n").deliver_failed_organs);
}

#[test]
fn allow_list_checks_title_and_optional_host() {
    let cfg = Config::from_toml(MINIMAL, &BTreeMap::new()).unwrap();
    let ae = |s| AeTitle::parse(s).unwrap();
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert!(cfg.dicom.allows(&ae("ORTHANC"), local, None));
    assert!(!cfg.dicom.allows(&ae("ORTHANC"), other, None));
    assert!(cfg.dicom.allows(&ae("STORESCU"), other, None));
    assert!(!cfg.dicom.allows(&ae("INTRUDER"), local, None));
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let env = BTreeMap::from([
        ("SEGNODE_AE_TITLE".to_string(), "OTHER".to_string()),
        (
            "SEGNODE_DICOM_LISTEN".to_string(),
            "0.0.0.0:4242".to_string(),
        ),
    ]);
    let cfg = Config::from_toml(MINIMAL, &env).unwrap();
    assert_eq!(cfg.ae_title.as_str(), "OTHER");
    assert_eq!(cfg.dicom.listen.port(), 4242);
    let bad = BTreeMap::from([("SEGNODE_STABLE_SECONDS".to_string(), "soon".to_string())]);
    let err = Config::from_toml(MINIMAL, &bad).unwrap_err();
    assert!(err.to_string().contains("SEGNODE_STABLE_SECONDS"), "{err}");
}

#[test]
fn several_nodes_name_themselves_and_share_a_postgres_database() {
    let cfg = Config::from_toml(MINIMAL, &BTreeMap::new()).unwrap();
    assert!(
        !cfg.membership.node_id.is_empty(),
        "the host name by default"
    );
    assert_eq!(cfg.membership.lease, Duration::from_secs(30));
    let text = MINIMAL.replace(
        "data_dir = \"/tmp/segnode\"",
        "data_dir = \"/mnt/shared\"\nnode_id = \"seg-a\"\nlease_seconds = 6",
    );
    let env = BTreeMap::from([(
        "SEGNODE_DATABASE".to_string(),
        "postgres://seg@db/segnode".to_string(),
    )]);
    let cfg = Config::from_toml(&text, &env).unwrap();
    assert_eq!(cfg.membership.node_id, "seg-a");
    assert_eq!(cfg.membership.poll_interval(), Duration::from_secs(1));
    assert_eq!(
        cfg.database,
        Database::Postgres("postgres://seg@db/segnode".into())
    );
    let env = BTreeMap::from([("SEGNODE_NODE_ID".to_string(), "seg-b".to_string())]);
    assert_eq!(
        Config::from_toml(&text, &env).unwrap().membership.node_id,
        "seg-b"
    );
    for bad in ["../x", "", "a b", ".hidden"] {
        let env = BTreeMap::from([("SEGNODE_NODE_ID".to_string(), bad.to_string())]);
        let err = Config::from_toml(&text, &env).unwrap_err();
        assert!(err.to_string().contains("node.node_id"), "{bad:?}: {err}");
    }
    let zero = text.replace("lease_seconds = 6", "lease_seconds = 0");
    let err = Config::from_toml(&zero, &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("node.lease_seconds"), "{err}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let unknown = format!("{MINIMAL}\n[series]\nstable_secs = 3\n");
    assert!(matches!(
        Config::from_toml(&unknown, &BTreeMap::new()),
        Err(ConfigError::Parse { .. })
    ));
    let bad_listen = MINIMAL.replace("127.0.0.1:11112", "nowhere");
    let err = Config::from_toml(&bad_listen, &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().starts_with("dicom.listen"), "{err}");
    let bad_regex = format!("{MINIMAL}\n[eligibility]\ndescription_exclude = [\"(\"]\n");
    assert!(Config::from_toml(&bad_regex, &BTreeMap::new()).is_err());
}

#[test]
fn a_dicomweb_destination_has_a_url_one_kind_of_credentials_and_no_dimse_keys() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "  abc\n").unwrap();
    let with = |keys: &str| {
        let text =
            format!("{MINIMAL}\n[[destinations]]\nname = \"web\"\nkind = \"dicomweb\"\n{keys}");
        Config::from_toml(&text, &BTreeMap::new())
    };
    let config = with(&format!(
        "url = \"https://archive.example/dicom-web/\"\ntoken_file = \"{}\"\n",
        token.display()
    ))
    .unwrap();
    let d = &config.destinations[0];
    assert_eq!(d.address(), "https://archive.example/dicom-web");
    match &d.transport {
        Transport::Dicomweb(web) => {
            assert!(matches!(&web.auth, WebAuth::Bearer(t) if t == "abc"));
            assert_eq!(format!("{:?}", web.auth), "bearer token", "never printed");
        }
        Transport::Dimse { .. } => panic!("{d:?}"),
    }
    for (keys, field) in [
        ("", "destinations.url"),
        ("url = \"ftp://x\"\n", "destinations.url"),
        ("url = \"http://x\"\nhost = \"x\"\n", "destinations.kind"),
        (
            "url = \"http://x\"\nusername = \"u\"\n",
            "destinations.token_file",
        ),
        (
            "url = \"http://x\"\ntoken_file = \"/nonexistent\"\n",
            "destinations.token_file",
        ),
    ] {
        let err = with(keys).unwrap_err();
        assert!(err.to_string().starts_with(field), "{keys:?}: {err}");
    }
    let dimse_with_url = format!(
        "{MINIMAL}\n[[destinations]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"h\"\nport = 104\nurl = \"http://x\"\n"
    );
    let err = Config::from_toml(&dimse_with_url, &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().starts_with("destinations.kind"), "{err}");
}

#[test]
fn sources_and_hl7_destinations_read_with_their_defaults_and_refuse_mistakes() {
    let text = format!(
        "{MINIMAL}\n[[sources]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"pacs.example\"\nport = 104\n\
         [[sources]]\nname = \"archive\"\nae_title = \"ARCH\"\nhost = \"a\"\nport = 11112\nretrieve = \"c-get\"\ncalling_ae = \"SEG_Q\"\n\
         [[hl7_destinations]]\nname = \"ris\"\nhost = \"ris.example\"\nport = 2575\nreceiving_application = \"RIS\"\n"
    );
    let cfg = Config::from_toml(&text, &BTreeMap::new()).unwrap();
    let dimse = |name| match &cfg.source(name).unwrap().transport {
        SourceTransport::Dimse {
            retrieve,
            calling_ae,
            ..
        } => (*retrieve, calling_ae.as_str().to_string()),
        SourceTransport::Dicomweb(_) => panic!("a C-MOVE or C-GET source"),
    };
    assert_eq!(cfg.source(None).unwrap().name, "pacs");
    assert_eq!(dimse(None), (Retrieve::Move, cfg.ae_title.to_string()));
    assert_eq!(dimse(Some("archive")), (Retrieve::Get, "SEG_Q".to_string()));
    assert!(cfg.source(Some("elsewhere")).is_none());
    let web = format!(
        "{MINIMAL}\n[[sources]]\nname = \"web\"\nretrieve = \"wado-rs\"\nurl = \"http://pacs/dicom-web/\"\n"
    );
    let web = Config::from_toml(&web, &BTreeMap::new()).unwrap();
    let SourceTransport::Dicomweb(target) = &web.sources[0].transport else {
        panic!("a DICOMweb source");
    };
    assert_eq!(target.url, "http://pacs/dicom-web");
    let ris = &cfg.hl7_destinations[0];
    assert_eq!(ris.sending_application, "SEGNODE");
    assert_eq!(ris.receiving_application, "RIS");
    assert_eq!(ris.address(), "ris.example:2575");

    for (tail, expected) in [
        (
            "[[sources]]\nname = \"p\"\nae_title = \"P\"\nhost = \"h\"\nport = 1\n[[sources]]\nname = \"p\"\nae_title = \"Q\"\nhost = \"h\"\nport = 2\n",
            "used twice",
        ),
        (
            "[[destinations]]\nname = \"ris\"\nae_title = \"P\"\nhost = \"h\"\nport = 1\n[[hl7_destinations]]\nname = \"ris\"\nhost = \"h\"\nport = 2\n",
            "used twice",
        ),
        (
            "[[sources]]\nname = \"p\"\nae_title = \"P\"\nhost = \"h\"\nport = 1\ntls = true\n",
            "a ca_file is required",
        ),
        (
            "[[sources]]\nname = \"p\"\nae_title = \"P\"\nhost = \"h\"\nport = 1\nretrieve = \"wado\"\n",
            "unknown variant",
        ),
        (
            "[[sources]]\nname = \"p\"\nretrieve = \"wado-rs\"\n",
            "a url is required",
        ),
        (
            "[[sources]]\nname = \"p\"\nretrieve = \"wado-rs\"\nurl = \"http://x\"\nae_title = \"P\"\n",
            "is for C-MOVE and C-GET sources",
        ),
        (
            "[[sources]]\nname = \"p\"\nae_title = \"P\"\nport = 1\n",
            "needs ae_title, host and port",
        ),
    ] {
        let err = Config::from_toml(&format!("{MINIMAL}\n{tail}"), &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains(expected) || format!("{err:?}").contains(expected),
            "{err:?}"
        );
    }
}
