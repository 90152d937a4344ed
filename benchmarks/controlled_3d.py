"""Controlled-truth 3D localisation: a classifier that can only be right by finding one focal lesion, explained.

Data: focal phantoms (``monai_cluscam.data.make_focal_phantom``, 32^3 voxels of 6 mm): the MNI152 subject of each
seed, with (class 1) or without (class 0) one bright focal lesion (1.5 to 1.8 times the intensity around it,
radius 18-30 mm: 3 to 5 voxels) at a random place inside the brain, so a faithful map of class 1 has one place to
point, the lesion mask. Seeded training, validation and test sets share no subject; each subject appears twice in
its set, without and with its lesion; each volume is divided by its 99th percentile and clipped to [0, 2] (the
lesion stays brighter than any tissue).

Model: MONAI's 3D ``ResNet`` (basic blocks, one per stage, widths 16/64/64/128, a 5^3 stem with stride 2, no max
pooling), so ``layer2`` has 64 channels on an 8^3 grid (24 mm cells). Trained here for 12 epochs with AdamW (lr
1e-3 with cosine decay to 0, weight decay 0.01) on batches of 8 subject pairs (each subject with and without its
lesion in the same batch). With lesions of 9-15 mm (1.5-2.5 voxels), 600 volumes and 28 epochs at a constant lr
reached only 0.89 test accuracy. What did not leave chance level (validation accuracy 0.5, loss ln 2) within
300-600 steps: 48^3 volumes with single (unpaired) batches, with pairs and a cosine schedule, with global max
pooling, with left-right flips and intensity scaling and shifts, and lr 1e-4. Lesions of radius 6-10 mm
(``--radius-mm 6 10``) on 48^3 volumes of 4 mm (``--shape 48``, 1.5-2.5 voxels), masking model, 800 volumes: still
at chance after 11 of 12 epochs (validation accuracy 0.495-0.505, loss 0.69; 774 s on 1 thread), so no small-lesion
results are committed yet. With masking augmentation (the
default model), from the fifth epoch on, half the training volumes are multiplied by a smooth random mask in [0,
1] that always keeps the lesion's ball (or, for class 0, the ball where the subject's lesion would be), so the
model learns that a masked copy keeps its class while the lesion is kept. The epoch with the best validation
accuracy is kept (for the masking model, among the epochs trained with masks). A second model without masking
augmentation measures what the augmentation does. Weights go into the output folder (``controlled_3d_model*.pt``)
and are reused when present (``--retrain`` trains again).

Explanations: 60 test volumes of class 1, explained for class 1, by ClusCAM, Grad-CAM, Grad-CAM++ and
Score-CAM (package defaults) from every layer; the best layer per method is chosen on 30 validation volumes
of class 1. Metrics:
``monai_cluscam.metrics.pointing_game`` (ties count as misses) and ``energy_pointing_game`` against the lesion
mask, beside a uniform map's energy share (the lesion's share of the volume) and the hit rate of a peak drawn
at random inside the brain. Then, from ``layer2``: every method's maps restricted to the brain
(``cam(x, foreground=foreground_mask(x))``), for both models; and for ClusCAM, every K with every
``baseline=`` (zero as published, the input blurred, its mean), as they are and restricted to the brain, at
every temperature (the figure ``controlled_3d_k_tau.png``). The temperatures re-weigh the score differences of
ClusCAM's own call with its stages (``weigh``, ``combine``, ``finish``), checked against its maps at the
default temperature.

    python benchmarks/controlled_3d.py               # train (800 volumes, 12 epochs) or reuse, then explain
    python benchmarks/controlled_3d.py --train-only [--model plain]  # train the models (or one) and stop
    python benchmarks/controlled_3d.py --seed 1 --model masking  # another training seed of the masking model,
                                                     # results in benchmarks/results/controlled_3d_seed1/
    python benchmarks/controlled_3d.py --quick       # smoke run: 24^3 volumes, one short epoch, few variants
    python benchmarks/controlled_3d.py --radius-mm 6 10 --shape 48 --model masking
                                                     # small lesions (radius 10 mm and below) on 4 mm voxels,
                                                     # results in benchmarks/results/controlled_3d_small/

Writes ``controlled_3d.json``, ``controlled_3d.md`` and ``controlled_3d_k_tau.png`` into ``--output`` (default
``benchmarks/results``; a temporary folder with ``--quick``).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faithfulness import output_dir, run_benchmark  # noqa: E402  (the sibling script)

from monai_cluscam import ClusCAM  # noqa: E402
from monai_cluscam.cam.registry import method_label  # noqa: E402

NAME = "controlled_3d"
METHODS = ["cluscam", "gradcam", "gradcampp", "scorecam"]
LAYERS = ["layer1", "layer2", "layer3", "layer4"]
MODELS = {"masking": True, "plain": False}  # model name -> trained with masking augmentation
SEEDS = {"train": 5, "validation": 11, "test": 12}
BASELINES = ("zero", "blur", "mean")
CONTRAST = (-0.8, -0.5)  # a bright lesion
RADIUS_MM = (18.0, 30.0)  # 3 to 5 voxels of 6 mm
DEFAULT_TEMPERATURE = inspect.signature(ClusCAM).parameters["temperature"].default


def settings(quick: bool) -> dict:
    if quick:
        return {"shape": 24, "n": {"train": 8, "validation": 4, "test": 4}, "epochs": 1,
                "mask_from_epoch": 0, "batch": 8, "lr": 2e-3,
                "layer": "layer2", "layers": ["layer2"], "ks": [2], "temperatures": [0.5, 1.0], "chunk": 16,
                "explain": 2, "choose_on": 2, "radius_mm": list(RADIUS_MM)}
    return {"shape": 32, "n": {"train": 800, "validation": 200, "test": 200}, "epochs": 12, "mask_from_epoch": 4,
            "batch": 16,
            "lr": 1e-3, "layer": "layer2", "layers": LAYERS, "ks": [5, 10, 20, 40, 64],
            "temperatures": [0.1, 0.25, 0.5, 1.0, 2.0], "chunk": 32, "explain": 60, "choose_on": 30,
            "radius_mm": list(RADIUS_MM)}


# --- data and model ---------------------------------------------------------------------------------------
def focal_set(n: int, master_seed: int, shape: int, radius_mm: tuple[float, float] = RADIUS_MM) -> dict:
    """``n`` focal phantoms, classes alternating, each subject twice (without, then with its lesion): normalised
    images and their masks; lesion radii drawn from ``radius_mm``."""
    from monai_cluscam.data import make_focal_phantom

    seeds = np.random.SeedSequence([master_seed, 0]).generate_state((n + 1) // 2).tolist()
    fields = {"image": [], "mask": [], "region": [], "brain": []}
    for i in range(n):
        p = make_focal_phantom(i % 2, int(seeds[i // 2]), kind="volume", shape=shape, radius_mm=tuple(radius_mm),
                               contrast=CONTRAST)
        image = torch.as_tensor(p.image)
        fields["image"].append((image / torch.quantile(image.flatten(), 0.99)).clamp(0, 2))
        for key, array in (("mask", p.mask), ("region", p.region_mask), ("brain", p.brain_mask)):
            fields[key].append(torch.as_tensor(array > 0))
    out = {key: torch.stack(value) for key, value in fields.items()}
    out["label"] = torch.arange(n) % 2
    return out


def network() -> torch.nn.Module:
    from monai.networks.nets import ResNet

    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 64, 64, 128], spatial_dims=3,
                  n_input_channels=1, conv1_t_size=5, conv1_t_stride=2, no_max_pool=True, num_classes=2)


def augment(x: torch.Tensor, region: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A smooth random mask in [0, 1] keeping the lesion's ball, on about half of the volumes."""
    x = x.clone()
    for i in torch.nonzero(torch.rand(x.shape[0], generator=g) < 0.5).flatten().tolist():
        grid = int(torch.randint(2, 7, (1,), generator=g))
        field = torch.rand(1, 1, grid, grid, grid, generator=g) ** (0.5 + 2.5 * torch.rand(1, generator=g))
        field = F.interpolate(field, size=x.shape[2:], mode="trilinear", align_corners=False)[0]
        keep = F.max_pool3d(region[i : i + 1].float(), 5, stride=1, padding=2)[0]
        x[i] = x[i] * torch.maximum(field, keep)
    return x


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        pred = torch.cat([net(chunk).argmax(1) for chunk in x.split(32)])
    return float((pred == y).float().mean())


def train(cfg: dict, data: dict, masking: bool, path: Path) -> dict:
    """Train one model, keep the best validation epoch, save its state dict to ``path``; returns the history."""
    torch.manual_seed(cfg["seed"])
    g = torch.Generator().manual_seed(cfg["seed"])
    net = network()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-2)
    steps = cfg["epochs"] * -(-len(data["train"]["label"]) // cfg["batch"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    train_set, val = data["train"], data["validation"]
    history, best, best_state, start = [], -1.0, None, time.perf_counter()
    for epoch in range(cfg["epochs"]):
        net.train()
        pairs, losses = torch.randperm(len(train_set["label"]) // 2), []
        for chosen in pairs.split(cfg["batch"] // 2):
            idx = torch.stack([2 * chosen, 2 * chosen + 1], 1).flatten()  # a subject without and with its lesion
            x = train_set["image"][idx]
            if masking and epoch >= cfg["mask_from_epoch"]:
                x = augment(x, train_set["region"][idx], g)
            loss = F.cross_entropy(net(x), train_set["label"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            losses.append(float(loss.detach()))
        net.eval()
        acc = accuracy(net, val["image"], val["label"])
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "validation_accuracy": acc,
                        "seconds": time.perf_counter() - start})
        print(f"[{path.name}] epoch {epoch + 1}: loss {history[-1]['loss']:.4f}, validation accuracy {acc:.3f}, "
              f"{history[-1]['seconds']:.0f} s", flush=True)
        if acc > best and (not masking or epoch >= cfg["mask_from_epoch"]):  # a masking model has seen masks
            best, best_state = acc, copy.deepcopy(net.state_dict())
    torch.save(best_state, path)
    return {"masking_augmentation": masking, "epochs": history, "best_validation_accuracy": best,
            "train_seconds": time.perf_counter() - start}


def load_models(cfg: dict, data: dict, out: Path, retrain: bool, names: tuple[str, ...]) -> tuple[dict, dict]:
    """The models ``names`` (trained now when their weights are absent or ``retrain``) and their training records."""
    nets, records = {}, {}
    for name in names:
        masking = MODELS[name]
        seed = f"_seed{cfg['seed']}" if cfg["seed"] else ""
        path = out / f"{NAME}_model{'' if masking else '_' + name}{seed}.pt"
        if retrain or not path.exists():
            if "train" not in data:
                data["train"] = focal_set(cfg["n"]["train"], SEEDS["train"], cfg["shape"], cfg["radius_mm"])
            records[name] = train(cfg, data, masking, path)
        net = network()
        net.load_state_dict(torch.load(path, weights_only=True))
        nets[name] = net.eval()
        records.setdefault(name, {})["weights"] = path.name
        records[name]["weights_mb"] = path.stat().st_size / 2**20
    return nets, records


# --- explanations and scores ------------------------------------------------------------------------------
def score(sal: torch.Tensor, mask: torch.Tensor) -> dict:
    from monai_cluscam.metrics import energy_pointing_game, pointing_game

    return {"pointing_game": float(pointing_game(sal, mask).float().mean()),
            "energy_pointing_game": float(energy_pointing_game(sal, mask).nanmean())}


def explain(net, method: str, layer: str, x: torch.Tensor, cfg: dict, foreground: torch.Tensor | None = None,
            **args) -> tuple[torch.Tensor, float]:
    """Maps of class 1 for ``x`` by ``method`` from ``layer`` (package defaults otherwise; ``foreground``: one brain
    mask per volume, passed to ``cam(x, foreground=...)``), and seconds per volume."""
    from monai_cluscam.transforms import make_explainer

    if method != "gradcam" and method != "gradcampp":
        args.setdefault("batch_size", cfg["chunk"])
    cam = make_explainer(net, method, layer, **args)
    start = time.perf_counter()
    maps = torch.cat([cam(x[i : i + 1], class_idx=1, foreground=None if foreground is None else foreground[i : i + 1])
                      for i in range(len(x))])
    return maps, (time.perf_counter() - start) / len(x)


def cluscam_sweep(net, x: torch.Tensor, mask: torch.Tensor, fg: torch.Tensor, cfg: dict) -> tuple[dict, float]:
    """ClusCAM of class 1 from ``cfg["layer"]`` for every K and ``baseline=`` option, at every temperature, as they
    are and restricted to the brain; and the largest difference from ClusCAM's own maps.

    One ClusCAM call per volume, K and baseline; the temperatures re-weigh that call's score differences with
    ClusCAM's own stages (``weigh``, ``combine``, ``finish``, which with ``fg`` is what ``cam(x, foreground=fg)``
    does), so at the default temperature the maps are the call's own.
    """
    rows, check, size = {}, 0.0, x.shape[2:]
    for k in cfg["ks"]:
        for baseline in BASELINES:
            cam = ClusCAM(net, cfg["layer"], num_clusters=k, baseline=baseline, batch_size=cfg["chunk"],
                          centroids="mean")
            own, parts = [], []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # K above the layer's channels is clamped
                for i in range(len(x)):
                    own.append(cam(x[i : i + 1], class_idx=1))
                    parts.append((cam.explanation_.cluster_maps, cam.explanation_.score_diffs))
            # what ClusCAM's call does after the sum: no attribution where masking cannot change the input
            keep = (~cam.unmaskable(x)).float() if cam._zeroes_unmaskable() else torch.ones_like(x[:, :1])
            for tau in cfg["temperatures"]:
                cam.temperature = tau
                sums = [cam.combine(cam.weigh(diffs), clusters) for clusters, diffs in parts]
                maps = torch.cat([cam.finish(s, size, keep[i : i + 1]) for i, s in enumerate(sums)])
                in_brain = torch.cat([cam.finish(s, size, fg[i : i + 1] * keep[i : i + 1])
                                      for i, s in enumerate(sums)])
                if tau == DEFAULT_TEMPERATURE:
                    check = max(check, float((maps - torch.cat(own)).abs().max()))
                rows[f"K={k} tau={tau} baseline={baseline}"] = {"k": k, "temperature": tau, "baseline": baseline,
                                                                 **score(maps, mask), "in_brain": score(in_brain, mask)}
            at_default = rows[f"K={k} tau={DEFAULT_TEMPERATURE} baseline={baseline}"]
            print(f"ClusCAM K={k} baseline={baseline}: {at_default}", flush=True)
    return rows, check


def methods_by_layer(net, x: torch.Tensor, mask: torch.Tensor, cfg: dict) -> tuple[dict, dict]:
    """Scores of every method from every layer, and each method's maps from ``cfg["layer"]``."""
    rows, kept = {}, {}
    for method in METHODS:
        rows[method] = {}
        for layer in cfg["layers"]:
            maps, seconds = explain(net, method, layer, x, cfg)
            rows[method][layer] = {**score(maps, mask), "seconds_per_volume": seconds}
            print(f"{method} {layer}: {rows[method][layer]}", flush=True)
            if layer == cfg["layer"]:
                kept[method] = maps
    return rows, kept


def evaluate(cfg: dict, data: dict, nets: dict) -> dict:
    from monai_cluscam.data import foreground_mask

    test, val = data["test"], data["validation"]
    pos = torch.nonzero(test["label"] == 1).flatten()[: cfg["explain"]]
    val_pos = torch.nonzero(val["label"] == 1).flatten()[: cfg["choose_on"]]
    x, mask, brain = test["image"][pos], test["mask"][pos], test["brain"][pos]
    res = {"accuracy": {name: {"validation": accuracy(net, val["image"], val["label"]),
                               "test": accuracy(net, test["image"], test["label"])} for name, net in nets.items()},
           "test_volumes": len(test["label"]), "explained_volumes": len(pos), "layer_choice_volumes": len(val_pos),
           "uniform": {"energy_pointing_game": float(mask.float().mean()),
                       "pointing_game_random_peak_in_brain": float(mask.sum() / brain.sum())}}
    net = nets["masking"]
    res["validation_by_layer"] = methods_by_layer(net, val["image"][val_pos], val["mask"][val_pos], cfg)[0]
    val_rows = res["validation_by_layer"]
    best = {m: max(cfg["layers"], key=lambda la, m=m: (np.nan_to_num(val_rows[m][la]["energy_pointing_game"], nan=-1),
                                                       val_rows[m][la]["pointing_game"]))
            for m in METHODS}
    res["best_layer_on_validation"] = best
    res["test_by_layer"], layer_maps = methods_by_layer(net, x, mask, cfg)

    # the same layer, with and without cam(x, foreground=brain), for both models
    fg = torch.stack([foreground_mask(v) for v in x])
    res["foreground"] = {}
    for name, model in nets.items():
        res["foreground"][name] = {}
        for method in METHODS:
            maps = layer_maps[method] if name == "masking" else explain(model, method, cfg["layer"], x, cfg)[0]
            in_brain = explain(model, method, cfg["layer"], x, cfg, foreground=fg)[0]
            res["foreground"][name][method] = {"plain": score(maps, mask), "in_brain": score(in_brain, mask)}
    res["foreground_mask_vs_brain"] = float((fg == brain).float().mean())

    res["cluscam_sweep"], check = cluscam_sweep(net, x, mask, fg, cfg)
    if check > 1e-4:
        raise RuntimeError(f"re-weighed ClusCAM maps differ from ClusCAM's own by {check}")
    res["recombination_check_max_abs"] = check
    return res


def run(cfg: dict, out: Path, retrain: bool, train_only: bool, names: tuple[str, ...] = tuple(MODELS)) -> dict:
    start = time.perf_counter()
    data = {part: focal_set(cfg["n"][part], SEEDS[part], cfg["shape"], cfg["radius_mm"])
            for part in ("validation", "test")}
    made = time.perf_counter() - start
    print(f"made the validation and test phantoms in {made:.0f} s", flush=True)
    nets, records = load_models(cfg, data, out, retrain, names)  # makes the training set if it trains
    res = {"phantom_seconds": made, "training": records, "lesion_share_of_brain": float(
        data["test"]["mask"].sum() / data["test"]["brain"][data["test"]["label"] == 1].sum())}
    if not train_only:
        res.update(evaluate(cfg, data, nets))
    return res


# --- report -----------------------------------------------------------------------------------------------
def _row(label: str, s: dict) -> str:
    return f"| {label} | {s['pointing_game']:.2f} | {s['energy_pointing_game']:.4f} |"


def markdown(report: dict) -> str:
    meta, cfg, res = report["meta"], report["settings"], report["results"]
    uni, radius = res["uniform"], cfg.get("radius_mm", RADIUS_MM)
    lines = [f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads, "
             f"{meta['total_seconds']:.0f} s in all.", "",
             f"Focal phantoms {cfg['shape']}^3, lesion radius {radius[0]:g}-{radius[1]:g} mm; {cfg['n']['train']} "
             f"training, {cfg['n']['validation']} validation "
             f"and {res['test_volumes']} test volumes, half with a lesion. Test accuracy: "
             + ", ".join(f"{name} model {a['test']:.3f} (validation {a['validation']:.3f})"
                         for name, a in res["accuracy"].items()) + ".",
             "", f"{res['explained_volumes']} test volumes with a lesion, explained for class 1 (the best layer per "
             f"method chosen on {res['layer_choice_volumes']} validation volumes with a lesion). The uniform map's "
             f"energy pointing game is {uni['energy_pointing_game']:.4f} (the lesion's share of the volume; 5x is "
             f"{5 * uni['energy_pointing_game']:.4f}); its pointing game is 0 (every voxel ties), and a peak drawn "
             f"at random inside the brain hits with probability {uni['pointing_game_random_peak_in_brain']:.4f}.",
             "", "Every method from every layer (masking model; best layer per method marked *):", "",
             "| method | layer | pointing game ↑ | energy pointing game ↑ | x uniform | s / volume |",
             "|---|---|---:|---:|---:|---:|"]
    for method, layers in res["test_by_layer"].items():
        for layer, s in layers.items():
            mark = "*" if res["best_layer_on_validation"][method] == layer else ""
            ratio = s["energy_pointing_game"] / uni["energy_pointing_game"]
            lines.append(f"| {method_label(method)} | {layer}{mark} | {s['pointing_game']:.2f} | "
                         f"{s['energy_pointing_game']:.4f} | {ratio:.1f} | {s['seconds_per_volume']:.2f} |")
    lines += ["", f"From `{cfg['layer']}`, maps as they are and multiplied by the image's `foreground_mask` "
              "(pointing game / energy pointing game):", "",
              "| model | method | plain PG | plain EPG | in brain PG | in brain EPG |", "|---|---|---:|---:|---:|---:|"]
    for name, rows in res["foreground"].items():
        for method, r in rows.items():
            lines.append(f"| {name} | {method_label(method)} | {r['plain']['pointing_game']:.2f} | "
                         f"{r['plain']['energy_pointing_game']:.4f} | {r['in_brain']['pointing_game']:.2f} | "
                         f"{r['in_brain']['energy_pointing_game']:.4f} |")
    sweep, taus = res["cluscam_sweep"].values(), cfg["temperatures"]
    default = [r for r in sweep if r["temperature"] == DEFAULT_TEMPERATURE]
    lines += ["", f"ClusCAM from `{cfg['layer']}` (masking model), drop ratio 0.5, by K and `baseline=` (what the "
              "masked-out voxels become: zeros as published, the input blurred, the volume's mean), at the default "
              f"temperature {DEFAULT_TEMPERATURE}, as they are and with `foreground=` the brain (the temperatures "
              f"re-weigh each call's score differences, which reproduces ClusCAM's maps to "
              f"{res['recombination_check_max_abs']:.1e}):", "",
              "| K | baseline | PG | EPG | x uniform | in brain PG | in brain EPG |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for r in default:
        lines.append(f"| {r['k']} | {r['baseline']} | {r['pointing_game']:.2f} | {r['energy_pointing_game']:.4f} | "
                     f"{r['energy_pointing_game'] / uni['energy_pointing_game']:.1f} | "
                     f"{r['in_brain']['pointing_game']:.2f} | {r['in_brain']['energy_pointing_game']:.4f} |")
    lines += ["", "Pointing game (as they are) by temperature:", "",
              "| K | baseline | " + " | ".join(f"tau {t}" for t in taus) + " |", "|---:|---|" + "---:|" * len(taus)]
    for r in default:
        pgs = [res["cluscam_sweep"][f"K={r['k']} tau={t} baseline={r['baseline']}"]["pointing_game"] for t in taus]
        lines.append(f"| {r['k']} | {r['baseline']} | " + " | ".join(f"{v:.2f}" for v in pgs) + " |")
    lines += ["", "Training (best validation epoch kept):", ""]
    for name, rec in res["training"].items():
        if "epochs" in rec:
            lines.append(f"- {name}: masking augmentation {rec['masking_augmentation']}, best validation accuracy "
                         f"{rec['best_validation_accuracy']:.3f}, {len(rec['epochs'])} epochs in "
                         f"{rec['train_seconds']:.0f} s; weights `{rec['weights']}` ({rec['weights_mb']:.1f} MB).")
        else:
            lines.append(f"- {name}: weights `{rec['weights']}` reused ({rec['weights_mb']:.1f} MB).")
    return "\n".join(lines) + "\n"


def figure(report: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, res = report["settings"], report["results"]
    uniform = res["uniform"]["energy_pointing_game"]
    fig, axes = plt.subplots(2, len(BASELINES), figsize=(4 * len(BASELINES), 7), sharey="row", squeeze=False)
    for col, baseline in enumerate(BASELINES):
        for tau in cfg["temperatures"]:
            rows = [r for r in res["cluscam_sweep"].values() if r["temperature"] == tau and r["baseline"] == baseline]
            for ax, key in zip(axes[:, col], ("pointing_game", "energy_pointing_game"), strict=True):
                ax.plot([r["k"] for r in rows], [r[key] for r in rows], marker="o", label=f"tau = {tau}")
        axes[1, col].axhline(uniform, color="grey", linestyle="--", label="uniform map")
        for ax, title in zip(axes[:, col], ("pointing game", "energy pointing game"), strict=True):
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(cfg["ks"], [str(k) for k in cfg["ks"]])
            ax.set_xlabel("K (clusters)")
            ax.set_title(f"{title}, baseline {baseline}", fontsize=10)
    axes[1, -1].legend(fontsize=8)
    fig.suptitle(f"ClusCAM on {res['explained_volumes']} focal lesions")
    fig.tight_layout()
    path = out / f"{NAME}_k_tau.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def montage(cfg: dict, out: Path) -> Path:
    """The README's picture: the first test lesion, the axial slice through its centre, with the ground-truth
    contour, and each method's map of class 1 from ``cfg["layer"]`` (ClusCAM as published and with the blurred
    baseline), drawn from the masking model's weights in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net, _ = load_models(cfg, {}, out, retrain=False, names=("masking",))
    data = focal_set(2, SEEDS["test"], cfg["shape"], cfg["radius_mm"])  # the first subject, without and with its lesion
    x, mask = data["image"][1:2], data["mask"][1:2]
    z = int(torch.nonzero(mask[0, 0]).float().mean(0)[2].round())
    panels = [("ClusCAM (published)", explain(net["masking"], "cluscam", cfg["layer"], x, cfg)[0]),
              ("ClusCAM, baseline blur", explain(net["masking"], "cluscam", cfg["layer"], x, cfg, baseline="blur")[0])]
    panels += [(label, explain(net["masking"], method, cfg["layer"], x, cfg)[0])
               for method, label in (("gradcam", "Grad-CAM"), ("gradcampp", "Grad-CAM++"), ("scorecam", "Score-CAM"))]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.6 * (len(panels) + 1), 2.9))
    scan = x[0, 0, :, :, z].T.numpy()
    for ax, (title, heat) in zip(axes, [("scan and lesion", None), *panels], strict=True):
        ax.imshow(scan, cmap="gray", origin="lower")
        if heat is not None:
            ax.imshow(heat[0, 0, :, :, z].T.numpy(), cmap="jet", alpha=0.45, origin="lower", vmin=0, vmax=1)
        ax.contour(mask[0, 0, :, :, z].T.numpy(), levels=[0.5], colors="white", linewidths=1.2, origin="lower")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"Controlled-truth phantom: the class is the lesion (white contour); maps from {cfg['layer']}",
                 fontsize=10)
    fig.tight_layout()
    path = out / f"{NAME}_montage.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny volumes, one short epoch")
    parser.add_argument("--output", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--retrain", action="store_true", help="train the models even when their weights exist")
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) the models and stop")
    parser.add_argument("--model", choices=list(MODELS), default=None,
                        help="only this model (with --train-only: to train the two in parallel); the masking model "
                        "is always evaluated")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (weights and masking draws); another seed than 0 writes its weights as "
                        "*_seed<N>.pt and, without --output, its results into benchmarks/results/controlled_3d_seed<N>")
    parser.add_argument("--radius-mm", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help=f"range of the lesion radius in mm (default {RADIUS_MM[0]:g} {RADIUS_MM[1]:g}); another "
                        "range (or --shape) writes, without --output, into benchmarks/results/controlled_3d_small")
    parser.add_argument("--shape", type=int, default=None,
                        help="volume side in voxels over the 192 mm field of view (default 32: 6 mm voxels)")
    args = parser.parse_args(argv)
    cfg = {**settings(args.quick), "seed": args.seed}
    small = args.radius_mm is not None or args.shape is not None
    if args.radius_mm is not None:
        cfg["radius_mm"] = list(args.radius_mm)
    if args.shape is not None:
        cfg["shape"] = args.shape
    if (args.seed or small) and args.output is None and not args.quick:
        folder = f"{NAME}_small" if small else NAME
        args.output = Path(__file__).resolve().parent / "results" / (f"{folder}_seed{args.seed}" if args.seed
                                                                     else folder)
    out = output_dir(args, NAME)
    args.output = out
    names = tuple(dict.fromkeys(["masking", args.model])) if args.model else tuple(MODELS)
    if args.train_only:
        torch.set_num_threads(args.threads)
        run(cfg, out, args.retrain, train_only=True, names=(args.model,) if args.model else tuple(MODELS))
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # blank maps are misses; the metrics warn per sample
        out = run_benchmark(NAME, args, cfg, lambda: run(cfg, out, args.retrain, train_only=False, names=names),
                            markdown)
    figure(json.loads((out / f"{NAME}.json").read_text()), out)
    montage(cfg, out)
    return out


if __name__ == "__main__":
    main()
