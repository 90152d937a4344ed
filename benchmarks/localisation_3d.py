"""ClusCAM's 3D localisation against its K and temperature, next to Score-CAM and Grad-CAM, on phantoms.

The phantom volume bundle's classifier on the test phantoms of ``benchmarks/faithfulness.py`` (its test seed,
atrophic classes, 64^3), each explained for its true class from the bundle's target layer. Per variant: the
energy pointing game (share of the map's mass inside the simulated atrophy), the pointing game, both also
against the anatomical region atrophy is simulated in (``Phantom.region_mask``: the lateral ventricles and the
medial temporal lobes, dilated), and the share of the map's mass outside the head (voxels of the normalised
image under 0.05). Also ClusCAM's data-driven K
(``select_num_clusters``) on phantoms of the bundle's validation seed, never the test seed.

    python benchmarks/localisation_3d.py           # 9 test phantoms, 12 validation phantoms (about 2 minutes)
    python benchmarks/localisation_3d.py --quick   # smoke run: 16^3 phantoms, few variants

Writes ``localisation_3d.json`` and ``localisation_3d.md`` into ``--output`` (default ``benchmarks/results``;
a temporary folder with ``--quick``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import (  # noqa: E402  (the sibling script)
    BUNDLE_3D,
    PHANTOM_SHAPE,
    PHANTOM_TEST_SEED,
    REPO,
    _model_commit,
    common_parser,
    phantom_volumes,
    run_benchmark,
)

PHANTOM_VALIDATION_SEED = 2  # the phantom bundle's configs/train.json val_seed
HEAD_THRESHOLD = 0.05


def settings(quick: bool) -> dict:
    if quick:
        return {"shape": 16, "per_class": 1, "validation_per_class": 1, "k_candidates": [2, 4],
                "variants": [[4, 0.5], [4, 0.1]]}
    return {"shape": PHANTOM_SHAPE, "per_class": 3, "validation_per_class": 3, "k_candidates": [5, 10, 16, 20, 24, 32],
            "variants": [[10, 0.5], [10, 0.1], [10, 0.02], [20, 0.5], [20, 0.1], [32, 0.5], [32, 0.1]]}


def run(cfg: dict) -> dict:
    from monai_cluscam import ClusCAM, GradCAM, ScoreCAM
    from monai_cluscam.bundle import load_bundle
    from monai_cluscam.cam import select_num_clusters
    from monai_cluscam.metrics import attribution_outside_mask, energy_pointing_game, pointing_game

    bundle = load_bundle(BUNDLE_3D, device="cpu")
    net, layer = bundle.network, bundle.target_layers
    images, masks, labels = phantom_volumes(bundle, cfg["per_class"], [0, 1, 3], cfg["shape"])
    regions = phantom_volumes(bundle, cfg["per_class"], [0, 1, 3], cfg["shape"], field="region_mask")[1]
    cams = {f"ClusCAM K={k} tau={tau}": ClusCAM(net, layer, num_clusters=k, temperature=tau)
            for k, tau in cfg["variants"]}
    cams.update({"Score-CAM": ScoreCAM(net, layer), "Grad-CAM": GradCAM(net, layer)})
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant maps on the smoke run's tiny phantoms
        for name, cam in cams.items():
            energy, hits, region_energy, region_hits, outside, start = [], [], [], [], [], time.perf_counter()
            for i in range(len(images)):
                x, m, r = images[i : i + 1], masks[i : i + 1], regions[i : i + 1]
                sal = cam(x, labels[i : i + 1])
                energy.append(float(energy_pointing_game(sal, m)[0]))
                hits.append(bool(pointing_game(sal, m)[0]))
                region_energy.append(float(energy_pointing_game(sal, r)[0]))
                region_hits.append(bool(pointing_game(sal, r)[0]))
                outside.append(float(attribution_outside_mask(sal, x > HEAD_THRESHOLD)[0]))
            rows[name] = {"energy_pointing_game": float(np.mean(energy)), "pointing_game": float(np.mean(hits)),
                          "region_energy_pointing_game": float(np.mean(region_energy)),
                          "region_pointing_game": float(np.mean(region_hits)),
                          "outside_head": float(np.mean(outside)),
                          "seconds_per_volume": (time.perf_counter() - start) / len(images)}
            print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items()), flush=True)
        chance = float(masks.float().mean())
        validation, _, _ = phantom_volumes(bundle, cfg["validation_per_class"], [0, 1, 2, 3], cfg["shape"],
                                           seed=PHANTOM_VALIDATION_SEED)
        sel = select_num_clusters(net, layer, validation.split(4), candidates=cfg["k_candidates"], progress=False)
    return {
        "bundle": str(BUNDLE_3D.relative_to(REPO)),
        "model_commit": _model_commit(BUNDLE_3D),
        "target_layer": layer,
        "volumes": len(images),
        "uniform_energy_pointing_game": chance,
        "uniform_region_energy_pointing_game": float(regions.float().mean()),
        "methods": rows,
        "k_selection": {"validation_volumes": len(validation), "candidates": sel.candidates,
                        "mean_score_diffs": sel.mean_score_diffs, "chosen": sel.num_clusters},
    }


def markdown(report: dict) -> str:
    meta, res = report["meta"], report["results"]
    sel = res["k_selection"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads.",
        "",
        f"`{res['bundle']}` (weights: commit `{res['model_commit'][:10]}`), {res['volumes']} test phantoms (seed "
        f"{PHANTOM_TEST_SEED}, atrophic classes), each explained for its true class from `{res['target_layer']}`. "
        f"A uniform map scores {res['uniform_energy_pointing_game']:.4f} on the energy pointing game (the "
        "atrophy's share of the voxels). Region: the same games against the anatomy atrophy is simulated in "
        "(lateral ventricles and medial temporal lobes, dilated), where a uniform map scores "
        f"{res['uniform_region_energy_pointing_game']:.4f}. Outside head: the map's mass where the normalised "
        f"image is under {HEAD_THRESHOLD}.",
        "",
        "| method | energy pointing game ↑ | pointing game ↑ | region energy ↑ | region pointing ↑ | outside head ↓ "
        "| s / volume |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in res["methods"].items():
        lines.append(f"| {name} | {row['energy_pointing_game']:.4f} | {row['pointing_game']:.2f} | "
                     f"{row['region_energy_pointing_game']:.4f} | {row['region_pointing_game']:.2f} | "
                     f"{row['outside_head']:.2f} | {row['seconds_per_volume']:.2f} |")
    diffs = ", ".join(f"K={k}: {d:.3f}" for k, d in zip(sel["candidates"], sel["mean_score_diffs"], strict=True))
    lines += ["", f"Data-driven K on {sel['validation_volumes']} validation phantoms (seed {PHANTOM_VALIDATION_SEED}): "
              f"mean score differences {diffs}; chosen K = {sel['chosen']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    args = common_parser(__doc__, "smoke run: tiny phantoms, few variants").parse_args(argv)
    cfg = settings(args.quick)
    return run_benchmark("localisation_3d", args, cfg, lambda: run(cfg), markdown)


if __name__ == "__main__":
    main()
