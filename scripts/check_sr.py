#!/usr/bin/env python3
"""Independent check of a segnode measurement report (TID 1500 SR): reads it with
highdicom and, for each measurement group, reports the organ (tracking identifier),
the SEG and segment it references and the segment's label in that SEG, and its volume
and mean, minimum and maximum attenuation; the organs the report says were left out
(its Qualitative Evaluations: each organ's code and the comment saying why); then
converts the SR with dcmqi's tid1500reader and reports how many groups it found. Prints
a JSON report.

Usage: check_sr.py SR.dcm [SEG.dcm]   (no SEG when every organ was left out)
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import highdicom as hd
import pydicom

DERIVATIONS = {"373098007": "hu_mean", "255605001": "hu_min", "56851009": "hu_max"}


def left_out(sr):
    """The Qualitative Evaluations container (UMLS C0034375) under the root: the organs
    coded as left out, each with the comment that follows it."""
    organs = []
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0]
        if (name.CodingSchemeDesignator, name.CodeValue) != ("UMLS", "C0034375"):
            continue
        for child in item.ContentSequence:
            concept = child.ConceptNameCodeSequence[0].CodeValue
            if child.ValueType == "CODE" and concept == "left-out":
                code = child.ConceptCodeSequence[0]
                organs.append({"code": [code.CodingSchemeDesignator, code.CodeValue]})
            elif child.ValueType == "TEXT" and organs:
                organs[-1]["comment"] = str(child.TextValue)
    return organs


def main():
    sr_path = pathlib.Path(sys.argv[1])
    sr = hd.sr.srread(sr_path)
    labels = {}
    if len(sys.argv) > 2:
        seg = pydicom.dcmread(sys.argv[2], stop_before_pixels=True)
        labels = {s.SegmentNumber: s.SegmentLabel for s in seg.SegmentSequence}
    groups = []
    for g in sr.content.get_volumetric_roi_measurement_groups():
        ref = g.referenced_segment
        number = int(ref[0].ReferencedSOPSequence[0].ReferencedSegmentNumber)
        entry = {
            "organ": str(g.tracking_identifier),
            "seg_sop_instance_uid": ref.referenced_sop_instance_uid,
            "segment_number": number,
            "segment_label": labels.get(number),
        }
        for m in g.get_measurements():
            if m.name.value == "118565006":
                entry["ml"] = float(m.value)
                entry["volume_unit"] = m.unit.value
                entry["volume_derivation"] = m.derivation.value if m.derivation is not None else None
            else:
                derivation = m.derivation.value if m.derivation is not None else None
                entry[DERIVATIONS.get(derivation, derivation)] = float(m.value)
        entry["qualitative"] = [[q.name.value, q.value.value] for q in g.get_qualitative_evaluations()]
        entry["finding_sites"] = [
            {"site": s.value.value,
             "laterality": s.laterality.value if s.laterality is not None else None}
            for s in g.finding_sites]
        groups.append(entry)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "tid1500.json"
        tool = pathlib.Path(sys.executable).parent / "tid1500reader"
        run = subprocess.run([str(tool), "--inputDICOM", str(sr_path), "--outputMetadata", str(out)],
                             capture_output=True, text=True)
        tid = json.loads(out.read_text()) if run.returncode == 0 and out.exists() else None
    report = {
        "sop_class_uid": str(sr.SOPClassUID),
        "template": str(sr.ContentTemplateSequence[0].TemplateIdentifier),
        "study_uid": str(sr.StudyInstanceUID),
        "groups": groups,
        "left_out": left_out(sr),
        "tid1500reader_ok": tid is not None,
        "tid1500reader_groups": len(tid["Measurements"]) if tid else 0,
        "tid1500reader_source_series": sorted({m["SourceSeriesForImageSegmentation"] for m in tid["Measurements"]}) if tid else [],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
