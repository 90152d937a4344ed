"""ClusCAM ablation: number of clusters K, pruning ratio r, temperature tau, data-driven K, hard versus soft
cluster assignment, and the cost of each stage of the pipeline.

Same model, data and metrics as ``benchmarks/faithfulness.py``: the Alzheimer MRI bundle's classifier (loaded at
run time), held-out test slices of its split explained for the predicted class from ``layer4`` (the bundle's layer
before 0.3.0), as published (no ``zero_unmaskable``),
scored by Average Drop, Increase in Confidence, Average Gain, Deletion AUC (zeros) and Insertion AUC (blurred).

- K in (5, 10, 20, 30, 40) and the data-driven K at r = 0.5, tau = 0.5: one ClusCAM run each.
- r and tau at K = 10: ClusCAM's maps are recombined from the K = 10 run's clusters and score differences
  (``explanation_``) with other weights; no other forward pass is needed (checked: r = 0.5, tau = 0.5
  reproduces ClusCAM's map).
- Data-driven K: ``select_num_clusters`` over validation slices (never the test slices), then that K.
- Target layer: K = 10 from ``layer3`` (8 x 8 grid, 128 channels) beside the bundle's ``layer4`` (4 x 4, 512
  channels).
- Soft assignment (here, not in the package): each channel belongs to every k-means centroid with weight
  ``softmax_k(-||a_c - mu_k||^2 / s)`` (``s``: the mean squared distance of the channels to their own centroid);
  the soft meta-representations are the weighted means of the channel maps, scored and combined as ClusCAM does.
- Masked copies' baseline: ``ClusCAM(baseline="blur")`` and ``"mean"`` at K = 10 and 40, beside the published
  zeros (note: the insertion metric starts from a blurred slice too, so it may favour the blurred baseline).
- Pipeline cost: median wall time of capture (the forward pass recording the layer), clustering (normalisation
  and k-means), masked scoring (K masked forward passes) and combining, for one 2D slice and one 3D phantom.

    python benchmarks/ablation.py            # 48 test slices, 48 validation slices for K
    python benchmarks/ablation.py --quick    # smoke run

Writes ``ablation.json`` and ``ablation.md`` into ``--output`` (default ``benchmarks/results``; a temporary
folder with ``--quick``).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import (  # noqa: E402  (the sibling script)
    BUNDLE_2D,
    BUNDLE_3D,
    REPO,
    _model_commit,
    common_parser,
    faithfulness_scores,
    load_test_slices,
    phantom_volumes,
    run_benchmark,
    summarise,
)

from monai_cluscam.cam import ClusCAM, select_num_clusters  # noqa: E402
from monai_cluscam.cam.base import minmax_normalize, weighted_sum  # noqa: E402

#: the layer this study of the published algorithm (``zero_unmaskable=False``) measured: the 2D bundle's until
#: its 0.3.0, which explains from layers 2-4 (``benchmarks/readability.py`` measures that)
LAYER = "layer4"

COLUMNS = [("average_drop", 2), ("increase_in_confidence", 2), ("average_gain", 2), ("deletion_auc", 4),
           ("insertion_auc", 4)]


def settings(quick: bool) -> dict:
    if quick:
        return {"n_images": 2, "n_validation": 2, "batch_images": 2, "steps": 4, "chunk": 64, "ks": [2],
                "drop_ratios": [0.0, 0.5], "temperatures": [2.0], "k_candidates": [2, 5], "repeats": 1,
                "phantom_shape": 16, "warm_up": False, "layers": ["layer4"], "baselines": ["blur"], "baseline_ks": [10]}
    return {"n_images": 48, "n_validation": 48, "batch_images": 16, "steps": 50, "chunk": 128,
            "ks": [5, 10, 20, 30, 40], "drop_ratios": [0.0, 0.25, 0.5, 0.75, 0.9],
            "temperatures": [0.1, 0.25, 0.5, 1.0, 2.0], "k_candidates": [5, 10, 20, 30, 40, 50, 64, 100],
            "repeats": 5, "phantom_shape": 64, "warm_up": True, "layers": ["layer3"], "baselines": ["blur", "mean"],
            "baseline_ks": [10, 40]}


def recombine(cam: ClusCAM, like: ClusCAM, size) -> torch.Tensor:
    """``cam``'s map from the clusters and score differences of ``like``'s last call, weighted with ``cam``'s
    pruning ratio and temperature (ClusCAM's public ``weigh`` and ``finish`` stages)."""
    exp = like.explanation_
    return cam.finish(weighted_sum(cam.weigh(exp.score_diffs), exp.cluster_maps), size)


def soft_cluscam(cam: ClusCAM, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """ClusCAM with soft assignments of channels to the k-means centroids (see the module docstring), built from
    ClusCAM's public stages: ``forward_pass``, ``cluster``, ``score``, ``weigh``, ``finish``."""
    (state,) = cam.forward_pass(x, classes)
    hard, labels = cam.cluster(state.activations, state.input_size)
    b, k, *grid = hard.shape
    channels = minmax_normalize(state.activations, start_dim=2)[0].flatten(2)  # (B, C, P)
    d2 = torch.cdist(channels, hard.flatten(2)) ** 2  # (B, C, K)
    scale = d2.gather(2, labels[..., None]).mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    resp = torch.softmax(-d2 / scale, dim=2)
    soft = ((resp.transpose(1, 2) @ channels) / resp.sum(1)[..., None]).view(b, k, *grid)
    weights = cam.weigh(cam.score(x, state, soft))
    return cam.finish(weighted_sum(weights, soft), state.input_size)


def stage_costs(cam: ClusCAM, x: torch.Tensor, cfg: dict) -> dict:
    """Median seconds of each public stage of ClusCAM on ``x`` (one sample), and of the whole call."""
    times: dict[str, list[float]] = {"capture": [], "clustering": [], "masked_scoring": [], "combine": [],
                                     "whole_call": []}
    if cfg["warm_up"]:
        cam(x)
    for _ in range(cfg["repeats"]):
        t0 = time.perf_counter()
        (state,) = cam.forward_pass(x, None)
        t1 = time.perf_counter()
        centroids, _ = cam.cluster(state.activations, state.input_size)
        t2 = time.perf_counter()
        diffs = cam.score(x, state, centroids)
        t3 = time.perf_counter()
        cam.finish(weighted_sum(cam.weigh(diffs), centroids), state.input_size)
        t4 = time.perf_counter()
        cam(x)
        t5 = time.perf_counter()
        for key, a, b in (("capture", t0, t1), ("clustering", t1, t2), ("masked_scoring", t2, t3),
                          ("combine", t3, t4), ("whole_call", t4, t5)):
            times[key].append(b - a)
    return {key: statistics.median(v) for key, v in times.items()}


def run(args, cfg: dict) -> dict:
    from monai_cluscam.bundle import load_bundle

    bundle = load_bundle(BUNDLE_2D, device="cpu")
    net, layer = bundle.network, LAYER
    images, _, _ = load_test_slices(args.data, args.split, "test", cfg["n_images"], bundle.preprocessing)
    validation, _, _ = load_test_slices(args.data, args.split, "validation", cfg["n_validation"], bundle.preprocessing)
    with torch.no_grad():
        predicted = torch.cat([net(b) for b in images.split(64)]).argmax(1)

    def cluscam(target: str = layer, **kw) -> ClusCAM:
        return ClusCAM(net, target, batch_size=cfg["chunk"], zero_unmaskable=False,
                       **{"drop_ratio": 0.5, "temperature": 0.5, "centroids": "mean", **kw})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        selection = select_num_clusters(net, layer, validation.split(cfg["batch_images"]),
                                        candidates=cfg["k_candidates"], progress=False, batch_size=cfg["chunk"],
                                        centroids="mean", zero_unmaskable=False)
    chosen = selection.num_clusters
    variants: dict[str, dict] = {}
    for k in sorted({*cfg["ks"], 10, chosen}):
        variants[f"K={k}"] = {"group": "K", "cam": cluscam(num_clusters=k)}
    reference = variants["K=10"]["cam"]
    for r in cfg["drop_ratios"]:
        variants[f"K=10 r={r}"] = {"group": "r", "cam": cluscam(num_clusters=10, drop_ratio=r), "from": reference}
    for tau in cfg["temperatures"]:
        variants[f"K=10 tau={tau}"] = {"group": "tau", "cam": cluscam(num_clusters=10, temperature=tau),
                                       "from": reference}
    variants["K=10 soft"] = {"group": "soft", "cam": cluscam(num_clusters=10), "soft": True}
    for other in cfg["layers"]:
        variants[f"K=10 {other}"] = {"group": "layer", "cam": cluscam(other, num_clusters=10)}
    for k in cfg["baseline_ks"]:
        for baseline in cfg["baselines"]:
            variants[f"K={k} {baseline}"] = {"group": "baseline", "cam": cluscam(num_clusters=k, baseline=baseline)}
    for v in variants.values():
        v.update(per={}, seconds=0.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in variants.values():  # untimed warm-up: first-call costs are not the method's
            if "from" not in v and cfg["warm_up"]:
                v["cam"](images[:1])
    check = 0.0
    for start in range(0, len(images), cfg["batch_images"]):
        x, c = images[start : start + cfg["batch_images"]], predicted[start : start + cfg["batch_images"]]
        for name, v in variants.items():  # the K runs come first, so "from" holds this batch's K = 10 clusters
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if "from" in v:
                    sal = recombine(v["cam"], v["from"], x.shape[2:])
                elif v.get("soft"):
                    sal = soft_cluscam(v["cam"], x, c)
                else:
                    sal = v["cam"](x, class_idx=c)
            v["seconds"] += time.perf_counter() - t
            if name == "K=10 r=0.5":
                check = max(check, float((sal - variants["K=10"]["map"]).abs().max()))
            v["map"] = sal
            values, _, _ = faithfulness_scores(net, x, sal, c, cfg)
            for key, vals in values.items():
                v["per"].setdefault(key, []).extend(vals)
        print(f"ablation: {min(start + cfg['batch_images'], len(images))}/{len(images)} slices", flush=True)
    if check > 1e-5:
        raise RuntimeError(f"recombining K = 10 at r = 0.5, tau = 0.5 differs from ClusCAM's map by {check}")

    rows = {}
    for name, v in variants.items():
        row = summarise(v["per"])
        row.update(group=v["group"], seconds_per_image=v["seconds"] / len(images), recombined="from" in v,
                   per_image=v["per"])
        rows[name] = row
    bundle3d = load_bundle(BUNDLE_3D, device="cpu")
    volume = phantom_volumes(bundle3d, 1, [0], cfg["phantom_shape"])[0]
    costs = {
        "2d": stage_costs(cluscam(num_clusters=10), images[:1], cfg),
        "3d": stage_costs(ClusCAM(bundle3d.network, bundle3d.target_layers, num_clusters=10), volume, cfg),
    }
    return {
        "bundle": str(BUNDLE_2D.relative_to(REPO)),
        "model_commit": _model_commit(BUNDLE_2D),
        "target_layer": layer,
        "images": len(images),
        "validation_images": len(validation),
        "k_selection": {"candidates": selection.candidates, "mean_score_diffs": selection.mean_score_diffs,
                        "chosen": chosen},
        "recombination_check_max_abs": check,
        "variants": rows,
        "stage_seconds": costs,
        "phantom_shape": cfg["phantom_shape"],
    }



def markdown(report: dict) -> str:
    meta, cfg, res = report["meta"], report["settings"], report["results"]
    sel = res["k_selection"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads.",
        "",
        f"`{res['bundle']}` (weights: commit `{res['model_commit'][:10]}`, `{res['model_commit'].split()[-1]}`), "
        f"{res['images']} held-out test slices explained for the predicted class from `{res['target_layer']}`; "
        f"deletion (zeros) and insertion (blurred) in {cfg['steps']} steps. Defaults K = 10, r = 0.5, tau = 0.5. "
        "Rows marked * are recombined from the K = 10 clusters and score differences (no extra forward pass; "
        "their seconds are the recombination only).",
        "",
        "| variant | Avg Drop ↓ | Incr. Conf. ↑ | Avg Gain ↑ | Deletion AUC ↓ | Insertion AUC ↑ | s / image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in res["variants"].items():
        cells = " | ".join(f"{row[key]:.{digits}f}" for key, digits in COLUMNS)
        mark = "*" if row["recombined"] else ""
        lines.append(f"| {name}{mark} | {cells} | {row['seconds_per_image']:.3f} |")
    curve = ", ".join(f"K={k}: {v:.3f}" for k, v in zip(sel["candidates"], sel["mean_score_diffs"], strict=True))
    lines += [
        "",
        f"Data-driven K (`select_num_clusters` on {res['validation_images']} validation slices): mean of "
        f"(1/K) sum_k d_k per K: {curve}; chosen K = {sel['chosen']}.",
        "",
        "Cost of each stage of one ClusCAM call (K = 10, median seconds; 2D: one 128^2 slice; 3D: one "
        f"{res['phantom_shape']}^3 phantom through the 3D bundle's model):",
        "",
        "| input | capture | clustering | masked scoring | combine | whole call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case, c in res["stage_seconds"].items():
        lines.append(f"| {case} | {c['capture']:.4f} | {c['clustering']:.4f} | {c['masked_scoring']:.4f} | "
                     f"{c['combine']:.4f} | {c['whole_call']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    args = common_parser(__doc__, "smoke run: few slices, variants and steps").parse_args(argv)
    cfg = settings(args.quick)
    return run_benchmark("ablation", args, cfg, lambda: run(args, cfg), markdown)


if __name__ == "__main__":
    main()
