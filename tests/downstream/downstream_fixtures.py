"""Synthetic datasets in the format `cardiofair generate` writes (real images relabelled, so no
diffusion model is needed to test the plumbing), and small edits of a prepared dataset."""

from cardiofair.data.records import DatasetWriter, Record, load_record, read_manifest
from cardiofair.data.summary import with_cells
from cardiofair.prompts import build_prompt


def write_synthetic(real, out, sources, planned=("sex", "age"), crop=None, dose=None):
    """A synthetic dataset whose record i is drawn 'from' real record ``sources[i]``: its image,
    mask and attributes, with the provenance columns generation writes; with ``dose``, also each
    record's rank in its cell and the cell's planned count (its records / dose), as generation
    at that dose writes them."""
    manifest = read_manifest(real).set_index("record_id", drop=False)
    cells = with_cells(manifest)
    keys = ["|".join(cells.loc[r, [*planned, "diagnosis"]]) for r in sources]
    ranks = {"cell_rank": [keys[:i].count(key) for i, key in enumerate(keys)],
             "planned_count": [round(keys.count(key) / dose) if dose else None for key in keys]}
    with DatasetWriter(out) as writer:
        for i, record_id in enumerate(sources):
            source = load_record(real, manifest.loc[record_id].to_dict())
            image, mask = (source.image, source.mask) if crop is None else \
                (source.image[:, :crop, :crop], source.mask[:, :crop, :crop])
            synthetic_id = f"synthetic-c000-{i:05d}"
            writer.add(Record(image, mask, {
                "record_id": synthetic_id, "subject_id": synthetic_id, "dataset": "synthetic",
                "sex": source.meta["sex"], "diagnosis": source.meta["diagnosis"], "prompt": build_prompt(source.meta),
                "pixel_spacing_mm": source.meta["pixel_spacing_mm"], "slice_index": 0, "is_synthetic": True,
                "cell": "|".join(cells.loc[record_id, [*planned, "diagnosis"]]), "seed": i, "mask_policy": "copy",
                "mask_source": source.meta["subject_id"], "mask_source_record": record_id,
                **({name: values[i] for name, values in ranks.items()} if dose else {})}))
        writer.finish({"source": "test fixture"})
    return out


def rows_of(dataset, split, diagnosis=None, sex=None):
    """Record ids of one split, optionally of one diagnosis and sex."""
    manifest = read_manifest(dataset)
    keep = manifest["split"] == split
    if diagnosis:
        keep &= manifest["diagnosis"] == diagnosis
    if sex:
        keep &= manifest["sex"] == sex
    return manifest.loc[keep, "record_id"].tolist()


def blank_attribute(dataset, column, record_ids):
    """Make ``column`` unknown for these records, in the manifest on disk."""
    manifest = read_manifest(dataset)
    manifest.loc[manifest["record_id"].isin(record_ids), column] = None
    manifest.to_csv(dataset / "manifest.csv", index=False)
