//! `segnode import-nnunet`: an nnU-Net v2 results folder into a model folder.

use std::path::PathBuf;

use crate::cascade::frame::Frame;
use crate::import::{ImportOptions, import};

/// Import an nnU-Net v2 model (a results folder, e.g. TotalSegmentator's) as a model
/// folder: each fold's network to ONNX, and a manifest that runs it as nnU-Net does.
/// Needs a Python with torch and nnunetv2 (training/nnunet/setup makes one).
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// nnU-Net's training output folder (plans.json, dataset.json, fold_N/), or a
    /// folder of `Trainer__Plans__Configuration` folders; several for the parts of one
    /// model, in the order TotalSegmentator merges them (e.g. its Dataset291 to 295).
    #[arg(required = true, num_args = 1..)]
    results: Vec<PathBuf>,
    /// The configuration to import (e.g. 3d_fullres).
    #[arg(long)]
    configuration: String,
    /// Folds to ensemble, comma-separated (default: every fold_N found).
    #[arg(long)]
    folds: Option<String>,
    /// Checkpoint file name in each fold folder.
    #[arg(long, default_value = "checkpoint_final.pth")]
    checkpoint: String,
    /// Turn test-time mirroring off (nnU-Net's --disable_tta).
    #[arg(long)]
    no_mirroring: bool,
    /// The model folder to write (e.g. onnx/NAME).
    #[arg(long)]
    out: PathBuf,
    /// The anatomical frame of the training images as nnU-Net read them: "SAR" for
    /// NIfTI files in RAS orientation (TotalSegmentator's and most datasets').
    #[arg(long, default_value = "SAR", value_parser = |s: &str| Frame::parse(s).map_err(|e| e.to_string()))]
    frame: Frame,
    /// Model name (default: the output folder's name).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "1.0.0")]
    version: String,
    /// Put the stage 1 of this model folder in front (the cascade's region finder).
    #[arg(long)]
    behind: Option<PathBuf>,
    /// The Python that runs the export.
    #[arg(long, env = "SEGNODE_PYTHON", default_value = "python3")]
    python: PathBuf,
}

pub fn import_nnunet(args: ImportArgs) -> anyhow::Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        args.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "nnunet".into())
    });
    let imported = import(&ImportOptions {
        results: args.results,
        configuration: args.configuration,
        folds: args.folds,
        checkpoint: args.checkpoint,
        mirroring: !args.no_mirroring,
        out: args.out.clone(),
        python: args.python,
        frame: args.frame,
        name,
        version: args.version,
        behind: args.behind,
    })?;
    let m = &imported.model.manifest;
    println!("{} {}: {}", m.name, m.version, m.description);
    for name in &imported.shared {
        println!("  {name}: in several parts; one label, the later part's voxels win");
    }
    for (file, difference) in &imported.checks {
        println!("  {file}: ONNX Runtime vs PyTorch, largest logit difference {difference:.2e}");
    }
    for label in &m.labels {
        let qualifiers: String = [&label.modifier, &label.region, &label.region_modifier]
            .into_iter()
            .flatten()
            .map(|c| format!(", {}", c.meaning))
            .collect();
        println!(
            "  {:>3} {} ({} {} {}{qualifiers})",
            label.value, label.name, label.kind.scheme, label.kind.value, label.kind.meaning
        );
    }
    println!("model folder: {}", args.out.display());
    Ok(())
}
