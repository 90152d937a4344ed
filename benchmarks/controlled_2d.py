"""Controlled-truth 2D localisation on real slices: a classifier that can only be right by finding one small
planted lesion, explained.

Data: real skull-stripped Alzheimer MRI slices (128 x 128, grey values / 255), any class. Training and validation
slices are disjoint seeded draws from ``train/``, test slices a seeded draw from the held-out ``slices/``
(``labels.csv``) of ``../shared/data/alzheimer_mri``. Each slice appears twice in its set: as it is (class 0,
``no_lesion``) and with one planted lesion (class 1, ``lesion``): a bright disc of radius 3 to 6 px (drawn
uniformly), uniformly at 1.1 to 1.3 times the slice's 99th percentile of brain intensity (drawn uniformly, so
10-30 % above the brightest white matter), blended into the tissue over one pixel at its edge (``x (1 - p) + level
p`` with ``p = clip(r + 0.5 - d, 0, 1)`` at distance ``d`` from its centre), its centre drawn uniformly among the
brain pixels (``foreground_mask``) at least ``r + 2`` px from the brain's edge, so the disc lies inside the brain.
The lesion mask is where the image was changed (``d < r + 0.5``). A disc of 3 px among the 16,384 pixels is not
found by the whole slice's brightness: the model must find a small spot a little brighter than white matter.
What did not train to 0.95 here: a disc adding 0.2-0.35 to the tissue (so as bright as white matter when it fell
on grey matter, and invisible to the model in the CSF): 0.845 validation accuracy after 8 epochs (average
pooling, lr 1e-3), 0.875 after 12 (max pooling, lr 2e-3), missing every lesion on tissue darker than 0.3 and a
third of those on grey matter.

Model: MONAI's 2D ``ResNet`` (basic blocks, one per stage, widths 16/32/64/128, a 7 x 7 stem with stride 2, no
max pooling), its global average pooling replaced by global max pooling (one small lesion: the strongest cell
decides): ``layer1`` is 64 x 64 (2 px cells), ``layer2`` 32 x 32 (4 px), ``layer3`` 16 x 16 (8 px), ``layer4``
8 x 8 (16 px). Trained here for 10 epochs with AdamW (lr 2e-3, cosine decay to 0, weight decay 0.01) on batches of
16 slice pairs (each slice with and without its lesion in the same batch), random left-right flips; the epoch with
the best validation accuracy is kept. The weights (1.2 MB) go into the output folder (``controlled_2d_model.pt``)
and are reused when present (``--retrain`` trains again). The committed weights (seed 0, ``--train-only``, 275 s
on 1 thread): validation accuracy by epoch 0.938, 0.993, 0.988, 0.983, 0.998 (kept), 0.995, 0.993, 0.995, 0.995,
0.995.

Explanations: the test slices with a lesion, explained for class 1, by ClusCAM (published settings: K = 10,
tau = 0.5, drop ratio 0.5, zero baseline), Grad-CAM, Grad-CAM++ and Score-CAM (package defaults) from every layer
and from ``layer2+layer3+layer4`` (the maps of the three fused by their geometric mean); the best layer per method
is chosen on validation slices with a lesion. Forward passes are counted by a hook on the model (images through
it per explained image). Metrics: ``monai_cluscam.metrics.pointing_game`` (ties count as misses) against the
lesion mask and against the mask dilated by 2 px, and ``energy_pointing_game`` against the lesion mask, as a ratio
to a uniform map's (the lesion's share of the image), per slice then averaged. Then the ClusCAM sweep: every K of
5, 10, 20, 40 (clamped to the channels) at every temperature 0.1, 0.25, 0.5, 1.0, from ``layer2``, ``layer3`` and
``layer4``, with the zero baseline (published) and the blurred input as baseline, and with the cluster options
(``cluster_masks=``, see below). The temperatures re-weigh one call's score differences with ClusCAM's own stages
(``weigh``, ``combine``, ``finish``), checked against its maps at the default temperature. Last, the misses of
published ClusCAM: for each slice, the layer's lesion-detector channels (the largest response to the lesion: the
mean over the lesion's cells of the channel on the slice with its lesion less on the slice without), the cluster
the strongest one fell in, how many channels share it, how high the centroid is on the lesion against its own
peak, its score's rank and weight.

    python benchmarks/controlled_2d.py               # train (1,200 slice pairs, 8 epochs) or reuse, then explain
    python benchmarks/controlled_2d.py --train-only  # train the model and stop
    python benchmarks/controlled_2d.py --quick       # smoke run: few slices, one short epoch, few variants

Writes ``controlled_2d.json``, ``controlled_2d.md`` and ``controlled_2d.png`` into ``--output`` (default
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
from faithfulness import DATA, output_dir, run_benchmark  # noqa: E402  (the sibling script)

from monai_cluscam import ClusCAM  # noqa: E402
from monai_cluscam.cam.registry import method_label  # noqa: E402

NAME = "controlled_2d"
METHODS = ["cluscam", "gradcam", "gradcampp", "scorecam"]
LAYERS = ["layer1", "layer2", "layer3", "layer4", "layer2+layer3+layer4"]
SEEDS = {"train": 5, "validation": 11, "test": 12, "lesion": 21}
RADIUS_PX = (3.0, 6.0)
CONTRAST = (1.1, 1.3)  # the disc's level over the slice's 99th percentile of brain intensity
DILATE_PX = 2
DEFAULT_K = inspect.signature(ClusCAM).parameters["num_clusters"].default
DEFAULT_TEMPERATURE = inspect.signature(ClusCAM).parameters["temperature"].default
#: the ClusCAM variants of the sweep: name -> ClusCAM arguments (the published algorithm first)
VARIANTS = {"published": {"centroids": "mean"}, "blur": {"baseline": "blur", "centroids": "mean"},
            "normalized": {"centroids": "normalized"}, "weighted": {"centroids": "weighted"}}
#: the rows of the by-layer table: name -> (method, its arguments); the methods with their package defaults, and
#: ClusCAM with the weighted centroids
ROWS = {**{m: (m, {}) for m in METHODS}, "cluscam": ("cluscam", {"centroids": "mean"}),
        "cluscam-weighted": ("cluscam", {"centroids": "weighted"})}


def settings(quick: bool) -> dict:
    if quick:
        return {"n": {"train": 16, "validation": 8, "test": 8}, "epochs": 1, "batch": 16, "lr": 2e-3,
                "layers": ["layer3"], "sweep_layers": ["layer3"], "ks": [2, 5], "temperatures": [0.5, 1.0],
                "chunk": 32, "explain": 3, "choose_on": 2, "variants": list(VARIANTS)}
    return {"n": {"train": 1200, "validation": 200, "test": 400}, "epochs": 10, "batch": 32, "lr": 2e-3,
            "layers": LAYERS, "sweep_layers": ["layer2", "layer3", "layer4"], "ks": [5, 10, 20, 40],
            "temperatures": [0.1, 0.25, 0.5, 1.0], "chunk": 64, "explain": 100, "choose_on": 30,
            "variants": list(VARIANTS)}


# --- data and model ---------------------------------------------------------------------------------------
def read_slice(path: str) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)[None]


def slice_paths(part: str, n: int) -> list[str]:
    """``n`` slice files of ``part``: training and validation slices are disjoint seeded draws from ``train/``,
    test slices a seeded draw from the held-out ``slices/``."""
    from monai_cluscam.data import alzheimer_items

    if not DATA.is_dir():
        sys.exit(f"{DATA} does not exist: the benchmark needs the Alzheimer MRI slices (../shared/data/alzheimer_mri "
                 "beside the checkout).")
    if part == "test":
        items = alzheimer_items(DATA)
        order = np.random.default_rng(SEEDS["test"]).permutation(len(items))[:n]
    else:
        items = alzheimer_items(DATA / "train")
        order = np.random.default_rng(SEEDS["train"]).permutation(len(items))
        order = order[:n] if part == "train" else order[-n:]
    return [items[int(i)]["image"] for i in order]


def plant(image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``image`` with one bright disc inside the brain, the lesion mask (where the image changed) and the draw."""
    from scipy import ndimage as ndi

    from monai_cluscam.data import foreground_mask

    radius = float(rng.uniform(*RADIUS_PX))
    contrast = float(rng.uniform(*CONTRAST))
    brain = foreground_mask(image)[0].numpy()
    level = contrast * float(np.quantile(image[0].numpy()[brain], 0.99))
    inside = np.argwhere(ndi.distance_transform_edt(brain) >= radius + 2)
    cy, cx = inside[rng.integers(len(inside))]
    yy, xx = np.mgrid[: image.shape[1], : image.shape[2]]
    profile = torch.from_numpy(np.clip(radius + 0.5 - np.hypot(yy - cy, xx - cx), 0, 1).astype(np.float32))[None]
    lesioned = image * (1 - profile) + level * profile
    return lesioned, profile > 0, {"radius": radius, "contrast": contrast, "level": level,
                                   "centre": [int(cy), int(cx)]}


def slice_set(part: str, n: int) -> dict:
    """``n`` slices of ``part``, each twice (without, then with its lesion): images, lesion masks (the slice's
    lesion for both), brain masks and labels."""
    from monai_cluscam.data import foreground_mask

    fields = {"image": [], "mask": [], "brain": []}
    draws = []
    for i, path in enumerate(slice_paths(part, n)):
        clean = read_slice(path)
        lesioned, mask, draw = plant(clean, np.random.default_rng([SEEDS["lesion"], SEEDS[part], i]))
        draws.append({**draw, "file": Path(path).name})
        brain = foreground_mask(clean)
        for image in (clean, lesioned):
            fields["image"].append(image)
            fields["mask"].append(mask)
            fields["brain"].append(brain)
    out = {key: torch.stack(value) for key, value in fields.items()}
    out["label"] = torch.arange(2 * n) % 2
    out["draws"] = draws
    return out


def network() -> torch.nn.Module:
    from monai.networks.nets import ResNet

    net = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128], spatial_dims=2,
                 n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, no_max_pool=True, num_classes=2)
    net.avgpool = torch.nn.AdaptiveMaxPool2d(1)  # one small lesion: the strongest cell decides, not the mean
    return net


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        pred = torch.cat([net(chunk).argmax(1) for chunk in x.split(64)])
    return float((pred == y).float().mean())


def train(cfg: dict, data: dict, path: Path) -> dict:
    """Train the model, keep the best validation epoch, save its state dict to ``path``; returns the history."""
    torch.manual_seed(cfg["seed"])
    g = torch.Generator().manual_seed(cfg["seed"])
    net = network()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-2)
    train_set, val = data["train"], data["validation"]
    steps = cfg["epochs"] * -(-len(train_set["label"]) // cfg["batch"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    history, best, best_state, start = [], -1.0, None, time.perf_counter()
    for epoch in range(cfg["epochs"]):
        net.train()
        pairs, losses = torch.randperm(len(train_set["label"]) // 2, generator=g), []
        for chosen in pairs.split(cfg["batch"] // 2):
            idx = torch.stack([2 * chosen, 2 * chosen + 1], 1).flatten()  # a slice without and with its lesion
            x = train_set["image"][idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
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
        if acc > best:
            best, best_state = acc, copy.deepcopy(net.state_dict())
    torch.save(best_state, path)
    return {"epochs": history, "best_validation_accuracy": best, "train_seconds": time.perf_counter() - start}


def load_model(cfg: dict, data: dict, out: Path, retrain: bool) -> tuple[torch.nn.Module, dict]:
    path = out / f"{NAME}_model.pt"
    record = {}
    if retrain or not path.exists():
        if "train" not in data:
            data["train"] = slice_set("train", cfg["n"]["train"])
        record = train(cfg, data, path)
    net = network()
    net.load_state_dict(torch.load(path, weights_only=True))
    record.update(weights=path.name, weights_mb=path.stat().st_size / 2**20)
    return net.eval(), record


# --- explanations and scores ------------------------------------------------------------------------------
def layer_arg(layer: str) -> str | list[str]:
    return layer.split("+") if "+" in layer else layer


def dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    return F.max_pool2d(mask.float(), 2 * px + 1, stride=1, padding=px) > 0


def score(sal: torch.Tensor, mask: torch.Tensor) -> dict:
    from monai_cluscam.metrics import energy_pointing_game, pointing_game

    share = mask.flatten(1).float().mean(1)
    energy = energy_pointing_game(sal, mask)
    return {"pointing_game": float(pointing_game(sal, mask).float().mean()),
            f"pointing_game_dilated_{DILATE_PX}px": float(pointing_game(sal, dilate(mask, DILATE_PX)).float().mean()),
            "energy_pointing_game": float(energy.nanmean()),
            "energy_x_uniform": float((energy / share).nanmean())}


class PassCounter:
    """Counts the images that go through ``net`` (forward passes, one per image)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.count = 0
        self.handle = net.register_forward_pre_hook(self._hook)

    def _hook(self, _module, inputs) -> None:
        self.count += int(inputs[0].shape[0])

    def close(self) -> None:
        self.handle.remove()


def explain(net, method: str, layer: str, x: torch.Tensor, cfg: dict, **args) -> tuple[torch.Tensor, dict]:
    """Maps of class 1 for ``x`` by ``method`` from ``layer`` (package defaults otherwise), with seconds and forward
    passes per image."""
    from monai_cluscam.transforms import make_explainer

    if method not in ("gradcam", "gradcampp"):
        args.setdefault("batch_size", cfg["chunk"])
    cam = make_explainer(net, method, layer_arg(layer), **args)
    counter = PassCounter(net)
    start = time.perf_counter()
    try:
        maps = torch.cat([cam(x[i : i + 1], class_idx=1) for i in range(len(x))])
    finally:
        counter.close()
    return maps, {"seconds_per_image": (time.perf_counter() - start) / len(x),
                  "forward_passes_per_image": counter.count / len(x)}


def methods_by_layer(net, x: torch.Tensor, mask: torch.Tensor, cfg: dict) -> tuple[dict, dict]:
    """Scores of every row of ``ROWS`` from every layer, and the maps (row -> layer -> maps)."""
    rows, kept = {}, {}
    for method, (name, args) in ROWS.items():
        rows[method], kept[method] = {}, {}
        for layer in cfg["layers"]:
            maps, cost = explain(net, name, layer, x, cfg, **args)
            rows[method][layer] = {**score(maps, mask), **cost}
            kept[method][layer] = maps
            print(f"{method} {layer}: {rows[method][layer]}", flush=True)
    return rows, kept


def cluscam_sweep(net, x: torch.Tensor, mask: torch.Tensor, cfg: dict) -> tuple[dict, float, dict, dict]:
    """ClusCAM of class 1 for every variant, layer and K, at every temperature; the largest difference from
    ClusCAM's own maps; each call's parts and, at the analysed K, its maps (for the miss analysis)."""
    rows, check, parts_by_call, size = {}, 0.0, {}, x.shape[2:]
    maps_by_call = {}
    for variant in cfg["variants"]:
        for layer in cfg["sweep_layers"]:
            for k in cfg["ks"]:
                cam = ClusCAM(net, layer, num_clusters=k, batch_size=cfg["chunk"], **VARIANTS[variant])
                own, parts = [], []
                counter = PassCounter(net)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # K above the layer's channels is clamped
                    for i in range(len(x)):
                        own.append(cam(x[i : i + 1], class_idx=1))
                        e = cam.explanation_
                        parts.append((e.cluster_maps, e.score_diffs, e.channel_labels))
                counter.close()
                passes = counter.count / len(x)
                keep = (~cam.unmaskable(x)).float() if cam._zeroes_unmaskable() else None
                parts_by_call[(variant, layer, k)] = parts
                if k == miss_k(cfg):
                    maps_by_call[(variant, layer, k)] = torch.cat(own)
                for tau in cfg["temperatures"]:
                    cam.temperature = tau
                    sums = [cam.combine(cam.weigh(diffs), clusters) for clusters, diffs, _ in parts]
                    maps = torch.cat([cam.finish(s, size, None if keep is None else keep[i : i + 1])
                                      for i, s in enumerate(sums)])
                    if tau == DEFAULT_TEMPERATURE:
                        check = max(check, float((maps - torch.cat(own)).abs().max()))
                    rows[f"{variant} {layer} K={k} tau={tau}"] = {
                        "variant": variant, "layer": layer, "k": k, "clusters": int(parts[0][0].shape[1]),
                        "temperature": tau, "forward_passes_per_image": passes, **score(maps, mask)}
                at_default = rows[f"{variant} {layer} K={k} tau={DEFAULT_TEMPERATURE}"]
                print(f"ClusCAM {variant} {layer} K={k}: {at_default}", flush=True)
    return rows, check, parts_by_call, maps_by_call


def miss_k(cfg: dict) -> int:
    """The K of the miss analysis: the default when swept."""
    return DEFAULT_K if DEFAULT_K in cfg["ks"] else cfg["ks"][0]


def layer_activations(net, layer: str, x: torch.Tensor) -> torch.Tensor:
    from monai_cluscam.cam.layers import LayerCapture, resolve_layer

    module = resolve_layer(net, layer)[1]
    outs = []
    with torch.inference_mode():
        for chunk in x.split(64):
            with LayerCapture([module]) as capture:
                net(chunk)
            outs.append(capture.values[0].float())
    return torch.cat(outs)


def misses(net, x: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor, parts: list,
           layer: str, draws: list) -> dict:
    """Why published ClusCAM misses: per slice, the lesion-detector channels of ``layer`` and the cluster the
    strongest one fell in; the averages over hits and over misses."""
    from monai_cluscam.metrics import pointing_game

    acts, base = layer_activations(net, layer, x), layer_activations(net, layer, clean)
    grid = acts.shape[2:]
    cells = F.adaptive_max_pool2d(mask.float(), grid) > 0  # the layer's cells the lesion touches
    response = ((acts - base) * cells).flatten(2).sum(2) / cells.flatten(2).sum(2)  # (N, C)
    hit = pointing_game(maps, mask)
    per_slice = []
    for i, (clusters, diffs, labels) in enumerate(parts):
        r = response[i]
        top = int(r.argmax())
        detectors = r >= 0.5 * r.max()
        cluster = int(labels[0, top])
        members = labels[0] == cluster
        centroid = clusters[0, cluster]
        on_lesion = float((centroid * cells[i, 0]).amax())
        order = diffs[0].argsort(descending=True)
        rank = int((order == cluster).nonzero()) + 1
        peak = torch.nonzero(maps[i, 0] == maps[i, 0].amax())[0].float()
        centre = torch.tensor(draws[i]["centre"], dtype=torch.float32)
        per_slice.append({
            "hit": bool(hit[i]), "radius": draws[i]["radius"], "contrast": draws[i]["contrast"],
            "peak_distance_px": float((peak - centre).norm()),
            "detector_channels": int(detectors.sum()), "cluster_size": int(members.sum()),
            "detectors_in_cluster": int((members & detectors).sum()),
            "cluster_detector_share": float((members & detectors).sum() / members.sum()),
            "centroid_on_lesion": on_lesion,
            "centroid_on_lesion_over_peak": on_lesion / max(float(centroid.amax()), 1e-12),
            "centroid_peak": float(centroid.amax()),
            "score_rank": rank, "kept": rank <= len(diffs[0]) - int(0.5 * len(diffs[0])),
            "score_diff": float(diffs[0, cluster]), "best_score_diff": float(diffs[0].max()),
        })
    summary = {}
    groups = {"hits": [s for s in per_slice if s["hit"]], "misses": [s for s in per_slice if not s["hit"]]}
    for name, group in groups.items():
        summary[name] = {"count": len(group)}
        if group:
            for key in per_slice[0]:
                if key != "hit":
                    summary[name][key] = float(np.mean([float(s[key]) for s in group]))
    return {"layer": layer, "summary": summary, "per_slice": per_slice}


def evaluate(cfg: dict, data: dict, net: torch.nn.Module) -> dict:
    test, val = data["test"], data["validation"]
    pos = torch.nonzero(test["label"] == 1).flatten()[: cfg["explain"]]
    val_pos = torch.nonzero(val["label"] == 1).flatten()[: cfg["choose_on"]]
    x, mask, brain = test["image"][pos], test["mask"][pos], test["brain"][pos]
    share = mask.flatten(1).float().mean(1)
    res = {"accuracy": {"validation": accuracy(net, val["image"], val["label"]),
                        "test": accuracy(net, test["image"], test["label"]),
                        "test_no_lesion": accuracy(net, test["image"][test["label"] == 0],
                                                   test["label"][test["label"] == 0]),
                        "test_lesion": accuracy(net, test["image"][test["label"] == 1],
                                                test["label"][test["label"] == 1])},
           "test_images": len(test["label"]), "explained_images": len(pos), "layer_choice_images": len(val_pos),
           "uniform": {"energy_pointing_game": float(share.mean()),
                       "pointing_game_random_peak_in_brain": float((mask.flatten(1).sum(1)
                                                                    / brain.flatten(1).sum(1)).mean())},
           "lesions": {"radius_px": [d["radius"] for d in test["draws"]][: len(pos)],
                       "contrast": [d["contrast"] for d in test["draws"]][: len(pos)]}}
    print(f"accuracy {res['accuracy']}", flush=True)
    val_rows = methods_by_layer(net, val["image"][val_pos], val["mask"][val_pos], cfg)[0]
    res["validation_by_layer"] = val_rows
    res["best_layer_on_validation"] = {
        m: max(cfg["layers"], key=lambda la, m=m: (val_rows[m][la]["pointing_game"],
                                                   np.nan_to_num(val_rows[m][la]["energy_x_uniform"], nan=-1)))
        for m in ROWS}
    res["test_by_layer"], layer_maps = methods_by_layer(net, x, mask, cfg)
    res["cluscam_sweep"], check, parts, sweep_maps = cluscam_sweep(net, x, mask, cfg)
    if check > 1e-4:
        raise RuntimeError(f"re-weighed ClusCAM maps differ from ClusCAM's own by {check}")
    res["recombination_check_max_abs"] = check
    clean = test["image"][pos - 1]  # the same slices without their lesion
    res["misses"], k = {}, miss_k(cfg)
    for variant in [v for v in ("published", "weighted") if v in cfg["variants"]]:
        res["misses"][variant] = {}
        for layer in cfg["sweep_layers"]:
            res["misses"][variant][layer] = misses(net, x, clean, mask, sweep_maps[(variant, layer, k)],
                                                   parts[(variant, layer, k)], layer, test["draws"][: len(pos)])
            print(f"misses {variant} {layer}: {res['misses'][variant][layer]['summary']}", flush=True)
    res["miss_analysis_k"] = k
    return res


def run(cfg: dict, out: Path, retrain: bool, train_only: bool) -> dict:
    start = time.perf_counter()
    data = {part: slice_set(part, cfg["n"][part]) for part in ("validation", "test")}
    made = time.perf_counter() - start
    print(f"read and planted the validation and test slices in {made:.0f} s", flush=True)
    net, record = load_model(cfg, data, out, retrain)
    res = {"data_seconds": made, "training": record}
    if not train_only:
        res.update(evaluate(cfg, data, net))
    return res


# --- report -----------------------------------------------------------------------------------------------
def label(row: str) -> str:
    return "ClusCAM, weighted centroids" if row == "cluscam-weighted" else method_label(row)


def _cells(s: dict) -> str:
    return (f"{s['pointing_game']:.2f} | {s[f'pointing_game_dilated_{DILATE_PX}px']:.2f} | "
            f"{s['energy_pointing_game']:.4f} | {s['energy_x_uniform']:.1f}")


def targets(res: dict) -> list[str]:
    """The issue's targets (pointing game >= 0.95, energy >= 5 x uniform, at least 5 x fewer forward passes than
    Score-CAM from the same layers) for every ClusCAM setting of the sweep at the default temperature, and the
    by-layer rows; the lines of the report that list the settings meeting all three."""
    score_cam = {la: r["forward_passes_per_image"] for la, r in res["test_by_layer"]["scorecam"].items()}
    rows = [(f"{label(m)}, K = {DEFAULT_K}", la, r) for m in ("cluscam", "cluscam-weighted")
            for la, r in res["test_by_layer"][m].items()]
    rows += [(f"ClusCAM {r['variant']}, K = {r['clusters']}", r["layer"], r) for r in res["cluscam_sweep"].values()
             if r["temperature"] == DEFAULT_TEMPERATURE and r["k"] != DEFAULT_K]
    met = [f"{name} from {la} (PG {r['pointing_game']:.2f}, {r['energy_x_uniform']:.1f} x uniform, "
           f"{score_cam[la] / r['forward_passes_per_image']:.1f} x fewer passes than Score-CAM)"
           for name, la, r in rows if r["pointing_game"] >= 0.95 and r["energy_x_uniform"] >= 5
           and score_cam[la] >= 5 * r["forward_passes_per_image"]]
    return ["", "Targets (PG >= 0.95, energy >= 5 x uniform, >= 5 x fewer forward passes than Score-CAM from the "
            "same layers; default temperature) met by: " + ("; ".join(met) if met else "no ClusCAM setting") + "."]


def markdown(report: dict) -> str:
    meta, cfg, res = report["meta"], report["settings"], report["results"]
    uni, acc = res["uniform"], res["accuracy"]
    lines = [f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads, "
             f"{meta['total_seconds']:.0f} s in all.", "",
             f"Real slices, each without and with one planted bright disc (radius {RADIUS_PX[0]:g}-{RADIUS_PX[1]:g} "
             f"px, {CONTRAST[0]:g} to {CONTRAST[1]:g} times the slice's 99th percentile of brain intensity): "
             f"{cfg['n']['train']} training and "
             f"{cfg['n']['validation']} validation slices from `train/`, {cfg['n']['test']} test slices from "
             f"`slices/` ({res['test_images']} test images). Test accuracy {acc['test']:.3f} (without a lesion "
             f"{acc['test_no_lesion']:.3f}, with one {acc['test_lesion']:.3f}); validation {acc['validation']:.3f}.",
             "", f"{res['explained_images']} test slices with a lesion, explained for the lesion class (best layer per "
             f"method, marked *, chosen on {res['layer_choice_images']} validation slices by pointing game). PG: "
             f"pointing game against the lesion; PG +{DILATE_PX}: against the lesion dilated by {DILATE_PX} px; EPG: "
             "energy pointing game; x uniform: EPG over the lesion's share of the image, per slice, averaged (the "
             f"target is 5). The lesion's share is {uni['energy_pointing_game']:.4f} on average; a peak drawn at "
             f"random inside the brain hits with probability {uni['pointing_game_random_peak_in_brain']:.4f}.", "",
             f"| method | layer | PG ↑ | PG +{DILATE_PX} ↑ | EPG ↑ | x uniform ↑ | forward passes / image "
             "| s / image |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for method, layers in res["test_by_layer"].items():
        for layer, s in layers.items():
            mark = "*" if res["best_layer_on_validation"][method] == layer else ""
            lines.append(f"| {label(method)} | {layer}{mark} | {_cells(s)} | "
                         f"{s['forward_passes_per_image']:.0f} | {s['seconds_per_image']:.3f} |")
    lines += targets(res)
    sweep, taus = res["cluscam_sweep"], cfg["temperatures"]
    lines += ["", "ClusCAM sweep (drop ratio 0.5) by variant, layer and K, at the default temperature "
              f"{DEFAULT_TEMPERATURE} (the other temperatures re-weigh each call's score differences, which "
              f"reproduces ClusCAM's maps to {res['recombination_check_max_abs']:.1e}). Variants: "
              + "; ".join(f"`{v}` = {VARIANTS[v] or 'the published algorithm'}" for v in cfg["variants"]) + ".", "",
              f"| variant | layer | K | PG ↑ | PG +{DILATE_PX} ↑ | EPG ↑ | x uniform ↑ | forward passes / image |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    default = [r for r in sweep.values() if r["temperature"] == DEFAULT_TEMPERATURE]
    for r in default:
        lines.append(f"| {r['variant']} | {r['layer']} | {r['clusters']} | {_cells(r)} | "
                     f"{r['forward_passes_per_image']:.0f} |")
    for key, title in (("pointing_game", "Pointing game"), ("energy_x_uniform", "Energy x uniform")):
        lines += ["", f"{title} by temperature:", "",
                  "| variant | layer | K | " + " | ".join(f"tau {t}" for t in taus) + " |",
                  "|---|---|---:|" + "---:|" * len(taus)]
        for r in default:
            vals = [sweep[f"{r['variant']} {r['layer']} K={r['k']} tau={t}"][key] for t in taus]
            lines.append(f"| {r['variant']} | {r['layer']} | {r['clusters']} | "
                         + " | ".join(f"{v:.2f}" if key == "pointing_game" else f"{v:.1f}" for v in vals) + " |")
    lines += ["", f"Where ClusCAM (K = {res['miss_analysis_k']}, tau = {DEFAULT_TEMPERATURE}) misses, as published "
              "and with the weighted centroids: per layer, the averages over the slices it hits and those it misses. "
              "Detector channels: the layer's channels whose response to the lesion (on its cells, with the lesion "
              "less without) is at least half the strongest one's; cluster: the one the strongest detector fell in; "
              "on lesion: that centroid's (the mask scored) highest value on the lesion's cells, and over its own "
              "peak; rank: of that cluster's score among the K (1 = highest; the lower half is pruned), and the "
              "share of slices where it is kept.", "",
              "| variant | layer | slices | count | radius px | peak distance px | detectors | cluster size | "
              "detectors in it | on lesion | on lesion / peak | rank | kept |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for variant, by_layer in res["misses"].items():
        for layer, m in by_layer.items():
            for group in ("hits", "misses"):
                s = m["summary"][group]
                if s["count"]:
                    lines.append(
                        f"| {variant} | {layer} | {group} | {s['count']} | {s['radius']:.1f} | "
                        f"{s['peak_distance_px']:.1f} | {s['detector_channels']:.1f} | {s['cluster_size']:.1f} | "
                        f"{s['detectors_in_cluster']:.1f} | {s['centroid_on_lesion']:.2f} | "
                        f"{s['centroid_on_lesion_over_peak']:.2f} | {s['score_rank']:.1f} | {s['kept']:.2f} |")
    rec = res["training"]
    lines += ["", "Training (best validation epoch kept):", ""]
    if "epochs" in rec:
        lines.append(f"- best validation accuracy {rec['best_validation_accuracy']:.3f}, {len(rec['epochs'])} epochs "
                     f"in {rec['train_seconds']:.0f} s; weights `{rec['weights']}` ({rec['weights_mb']:.1f} MB).")
    else:
        lines.append(f"- weights `{rec['weights']}` reused ({rec['weights_mb']:.1f} MB).")
    return "\n".join(lines) + "\n"


def figure(report: dict, out: Path) -> Path:
    """The sweep: pointing game and energy x uniform by K, one column per variant and layer, one line per
    temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, res = report["settings"], report["results"]
    cols = [(v, la) for v in cfg["variants"] for la in cfg["sweep_layers"]]
    fig, axes = plt.subplots(2, len(cols), figsize=(3.2 * len(cols), 6.2), sharey="row", squeeze=False)
    for col, (variant, layer) in enumerate(cols):
        for tau in cfg["temperatures"]:
            rows = [r for r in res["cluscam_sweep"].values()
                    if r["temperature"] == tau and r["variant"] == variant and r["layer"] == layer]
            for ax, key in zip(axes[:, col], ("pointing_game", "energy_x_uniform"), strict=True):
                ax.plot([r["k"] for r in rows], [r[key] for r in rows], marker="o", label=f"tau = {tau}")
        axes[0, col].axhline(0.95, color="grey", linestyle="--")
        axes[1, col].axhline(5, color="grey", linestyle="--", label="target")
        for ax, title in zip(axes[:, col], ("pointing game", "energy x uniform"), strict=True):
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(cfg["ks"], [str(k) for k in cfg["ks"]])
            ax.set_xlabel("K (clusters)")
            ax.set_title(f"{title}\n{variant}, {layer}", fontsize=9)
    axes[1, -1].legend(fontsize=7)
    fig.suptitle(f"ClusCAM on {res['explained_images']} planted lesions (radius {RADIUS_PX[0]:g}-{RADIUS_PX[1]:g} px)")
    fig.tight_layout()
    path = out / f"{NAME}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def montage(report: dict, out: Path) -> Path:
    """Three test lesions (crops of 64 x 64 around them) with the lesion's contour and each row's map of class 1
    from its best layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, res = report["settings"], report["results"]
    net, _ = load_model(cfg, {}, out, retrain=False)
    test = slice_set("test", 3)
    x, mask = test["image"][1::2], test["mask"][1::2]
    best = res["best_layer_on_validation"]
    panels = [(f"{label(row)} ({best[row]})", explain(net, name, best[row], x, cfg, **args)[0])
              for row, (name, args) in ROWS.items()]
    fig, axes = plt.subplots(len(x), len(panels) + 1, figsize=(2.1 * (len(panels) + 1), 2.2 * len(x)), squeeze=False)
    for row in range(len(x)):
        cy, cx = test["draws"][row]["centre"]
        y0, x0 = int(np.clip(cy - 32, 0, 64)), int(np.clip(cx - 32, 0, 64))
        crop = (slice(y0, y0 + 64), slice(x0, x0 + 64))
        for ax, (title, heat) in zip(axes[row], [("slice and lesion", None), *panels], strict=True):
            ax.imshow(x[row, 0][crop].numpy(), cmap="gray", vmin=0, vmax=1.2)
            if heat is not None:
                ax.imshow(heat[row, 0][crop].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.contour(mask[row, 0][crop].float().numpy(), levels=[0.5], colors="white", linewidths=1)
            if row == 0:
                ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    path = out / f"{NAME}_montage.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few slices, one short epoch")
    parser.add_argument("--output", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--retrain", action="store_true", help="train the model even when its weights exist")
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) the model and stop")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    args = parser.parse_args(argv)
    cfg = {**settings(args.quick), "seed": args.seed}
    out = output_dir(args, NAME)
    args.output = out
    if args.train_only:
        run(cfg, out, args.retrain, train_only=True)
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # blank maps are misses; the metrics warn per sample
        out = run_benchmark(NAME, args, cfg, lambda: run(cfg, out, args.retrain, train_only=False), markdown)
        report = json.loads((out / f"{NAME}.json").read_text())
        figure(report, out)
        montage(report, out)
    return out


if __name__ == "__main__":
    main()
