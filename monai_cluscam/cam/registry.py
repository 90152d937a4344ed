"""The one registry of attribution methods: canonical names, aliases, display labels and classes.

The transforms, the handlers, the command line (``--method``) and the benchmarks all look methods up
here. A new method is a file in :mod:`monai_cluscam.cam` plus one :func:`register_method` call, at the
bottom of this module for a built-in method, or anywhere for a method of one's own:

    >>> from monai_cluscam.cam import GradCAM
    >>> spec = register_method("mygradcam", GradCAM, aliases=("my-grad-cam",), label="My Grad-CAM")
    >>> method_spec("My-Grad-CAM").name, method_label("mygradcam")
    ('mygradcam', 'My Grad-CAM')
    >>> _ = unregister_method("mygradcam")

Names and aliases are matched case-insensitively.
"""

from __future__ import annotations

from dataclasses import dataclass

from monai_cluscam.cam.base import BaseCAM
from monai_cluscam.cam.cluscam import ClusCAM
from monai_cluscam.cam.decomcam import DecomCAM
from monai_cluscam.cam.gradcam import GradCAM, GradCAMpp
from monai_cluscam.cam.occlusion import Occlusion
from monai_cluscam.cam.rise import RISE
from monai_cluscam.cam.scorecam import ScoreCAM

__all__ = [
    "METHODS",
    "MethodSpec",
    "canonical_name",
    "method_label",
    "method_names",
    "method_spec",
    "register_method",
    "unregister_method",
]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: canonical name (lower case), as ``method=`` and ``--method`` take it and results record it.
        cls: the :class:`~monai_cluscam.cam.base.BaseCAM` subclass, built as ``cls(network, target_layers,
            **method_args)``.
        label: display name for tables and plots (``"Grad-CAM++"``).
        aliases: other accepted names (lower case).
        masked_passes: the method scores masked or perturbed copies in chunks of ``batch_size``, so a smaller
            chunk lowers its memory; False for gradient methods (one forward and one backward pass).
    """

    name: str
    cls: type[BaseCAM]
    label: str
    aliases: tuple[str, ...] = ()
    masked_passes: bool = True


#: Attribution classes by canonical name, in registration order; kept in step with the registry (read only:
#: change it through :func:`register_method` and :func:`unregister_method`).
METHODS: dict[str, type[BaseCAM]] = {}
_SPECS: dict[str, MethodSpec] = {}
_LOOKUP: dict[str, str] = {}  # every accepted name and alias, lower case -> canonical name


def _key(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a method {what} must be a non-empty string; got {name!r}.")
    return name.strip().lower()


def register_method(
    name: str,
    cls: type[BaseCAM],
    aliases: tuple[str, ...] | list[str] = (),
    label: str | None = None,
    masked_passes: bool = True,
) -> MethodSpec:
    """Register the attribution class ``cls`` under ``name`` (and ``aliases``); returns its :class:`MethodSpec`.

    Args:
        name: canonical name, stored in lower case.
        cls: a :class:`~monai_cluscam.cam.base.BaseCAM` subclass taking ``(network, target_layers, **method_args)``.
        aliases: other names that select it (case-insensitive).
        label: display name for tables and plots; default the class name.
        masked_passes: see :class:`MethodSpec`.

    Raises:
        ValueError: a name or alias already taken, or ``cls`` not a ``BaseCAM`` subclass.
    """
    key = _key(name, "name")
    if not (isinstance(cls, type) and issubclass(cls, BaseCAM)):
        raise ValueError(f"method {key!r}: cls must be a subclass of monai_cluscam.cam.BaseCAM; got {cls!r}.")
    keys = [key, *(_key(a, "alias") for a in aliases)]
    if len(set(keys)) != len(keys):
        raise ValueError(f"method {key!r}: its name and aliases {keys} repeat a name.")
    taken = [k for k in keys if k in _LOOKUP]
    if taken:
        owners = ", ".join(f"{k!r} (by {_LOOKUP[k]!r})" for k in taken)
        raise ValueError(f"method {key!r}: already registered: {owners}; unregister_method() it first.")
    spec = MethodSpec(key, cls, label or cls.__name__, tuple(keys[1:]), bool(masked_passes))
    _SPECS[key] = spec
    METHODS[key] = cls
    _LOOKUP.update(dict.fromkeys(keys, key))
    return spec


def unregister_method(name: str) -> MethodSpec:
    """Remove the method ``name`` (or an alias of it) with all its aliases; returns its :class:`MethodSpec`."""
    spec = method_spec(name)
    del _SPECS[spec.name], METHODS[spec.name]
    for k in (spec.name, *spec.aliases):
        del _LOOKUP[k]
    return spec


def method_spec(method: str) -> MethodSpec:
    """The registered method that ``method`` names (its name or an alias, any case).

    Raises:
        ValueError: an unknown method; the message lists the valid ones.
    """
    key = method.strip().lower() if isinstance(method, str) else None
    if key not in _LOOKUP:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(map(repr, METHODS))}.")
    return _SPECS[_LOOKUP[key]]


def canonical_name(method: str) -> str:
    """The canonical name of ``method`` (``"Grad-CAM++"`` -> ``"gradcampp"``); ValueError when unknown."""
    return method_spec(method).name


def method_label(method: str) -> str:
    """The display label of ``method`` (``"gradcampp"`` -> ``"Grad-CAM++"``); ValueError when unknown."""
    return method_spec(method).label


def method_names(aliases: bool = False) -> list[str]:
    """The canonical names in registration order, followed by every alias when ``aliases``."""
    names = list(_SPECS)
    if aliases:
        names += [a for spec in _SPECS.values() for a in spec.aliases]
    return names


# --- the built-in methods: their order is that of error messages and listings ---------------------------
register_method("cluscam", ClusCAM, label="ClusCAM", aliases=("clus-cam",))
register_method("scorecam", ScoreCAM, label="Score-CAM", aliases=("score-cam",))
register_method("gradcam", GradCAM, label="Grad-CAM", aliases=("grad-cam",), masked_passes=False)
register_method("gradcampp", GradCAMpp, label="Grad-CAM++", aliases=("gradcam++", "grad-cam++"), masked_passes=False)
register_method("decomcam", DecomCAM, label="DecomCAM", aliases=("decom-cam",))
register_method("rise", RISE, label="RISE")
register_method("occlusion", Occlusion, label="Occlusion")
