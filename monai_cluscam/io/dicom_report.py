"""The classification and its explanation as a DICOM Structured Report (Comprehensive SR, built with highdicom).

One report per explained input, in the scan's Study, beside the Parametric Map: the predicted class and every
class's probability, the model (bundle name and version), the explanation method with its settings, the statement
that this is a research result, and references to the scan's slices and to the map. A PACS lists it with the scan;
``highdicom.sr.ComprehensiveSR.from_dataset`` reads it back, and :func:`read_report` returns its values.

Concepts without a standard code use the private coding scheme ``99MCC`` (declared in the report's Coding Scheme
Identification): the report's title, each class and each class's probability, the model and the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

__all__ = ["CODING_SCHEME", "RESEARCH_STATEMENT", "ClassificationReport", "classification_report", "read_report"]

#: The private coding scheme of the report's concepts that have no standard code.
CODING_SCHEME = "99MCC"
RESEARCH_STATEMENT = (
    "Research result of an automated classifier and its explanation (monai-cluscam); not for diagnosis. The "
    "attribution map shows where the model looked, not where disease is."
)
_SERIES_NUMBER = 9003


@dataclass(frozen=True)
class ClassificationReport:
    """What a report says (:func:`read_report`)."""

    predicted: str
    probabilities: dict[str, float]
    model: str
    model_version: str
    method: str
    parameters: dict[str, str]
    statement: str
    parametric_map_uid: str | None
    source_uids: tuple[str, ...]


def _code(hd, value: str, meaning: str):
    return hd.sr.CodedConcept(value, CODING_SCHEME, meaning[:64])


def _text(hd, code, value: str):
    return hd.sr.TextContentItem(name=code, value=value, relationship_type="CONTAINS")


def _algorithm(hd, title, name: str, version: str, parameters: dict[str, str]):
    """A container in the manner of DICOM's Algorithm Identification (TID 4019): name, version, parameters."""
    box = hd.sr.ContainerContentItem(name=title, relationship_type="CONTAINS")
    box.ContentSequence = [
        _text(hd, hd.sr.CodedConcept("111001", "DCM", "Algorithm Name"), name[:1024] or "unknown"),
        _text(hd, hd.sr.CodedConcept("111003", "DCM", "Algorithm Version"), version or "unknown"),
        *(_text(hd, hd.sr.CodedConcept("111002", "DCM", "Algorithm Parameters"), f"{k}={v}")
          for k, v in parameters.items()),
    ]
    return box


def classification_report(
    hd,
    *,
    sources: Sequence[Dataset],
    parametric_map: Dataset | None,
    class_names: Sequence[str],
    probabilities: Sequence[float],
    model: dict[str, str],
    method: dict[str, str],
    software_version: str,
) -> Dataset:
    """The Comprehensive SR of one explained input (see the module's notes); ``sources`` are the scan slices'
    reference datasets (Study, Series, SOP UIDs and the patient), ``method`` holds ``"method"`` and its settings.

    Raises:
        ValueError: probabilities and class names that do not pair up, or no source slice.
    """
    if len(class_names) != len(probabilities) or not class_names:
        raise ValueError(
            f"the report needs one probability per class; got {len(probabilities)} for {len(class_names)} classes."
        )
    if not sources:
        raise ValueError("the report references the scan it explains; no source slice was given.")
    best = max(range(len(probabilities)), key=lambda i: float(probabilities[i]))
    classes = [_code(hd, f"C{i}", name) for i, name in enumerate(class_names)]
    items = [
        _text(hd, hd.sr.CodedConcept("121106", "DCM", "Comment"), RESEARCH_STATEMENT),
        hd.sr.CodeContentItem(name=hd.sr.CodedConcept("121071", "DCM", "Finding"), value=classes[best],
                              relationship_type="CONTAINS"),
        *(hd.sr.NumContentItem(name=_code(hd, f"P{i}", f"Probability of {name}"), value=float(p),
                               unit=hd.sr.CodedConcept("1", "UCUM", "no units"), relationship_type="CONTAINS")
          for i, (name, p) in enumerate(zip(class_names, probabilities, strict=True))),
        _algorithm(hd, _code(hd, "MODEL", "Classifier"), model.get("name", ""), model.get("version", ""), {}),
        _algorithm(hd, _code(hd, "METHOD", "Explanation method"), method.get("method", ""), software_version,
                   {k: v for k, v in method.items() if k != "method"}),
    ]
    if parametric_map is not None:
        items.append(hd.sr.ImageContentItem(name=_code(hd, "MAP", "Attribution map"),
                                            referenced_sop_class_uid=parametric_map.SOPClassUID,
                                            referenced_sop_instance_uid=parametric_map.SOPInstanceUID,
                                            relationship_type="CONTAINS"))
    items += [hd.sr.ImageContentItem(name=hd.sr.CodedConcept("121112", "DCM", "Source of Measurement"),
                                     referenced_sop_class_uid=ds.SOPClassUID,
                                     referenced_sop_instance_uid=ds.SOPInstanceUID, relationship_type="CONTAINS")
              for ds in sources]
    root = hd.sr.ContainerContentItem(name=_code(hd, "REPORT", "Explained classification (research)"))
    root.ContentSequence = items
    evidence = [*sources, *([parametric_map] if parametric_map is not None else [])]
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=root,
        series_instance_uid=hd.UID(),
        series_number=_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai-cluscam",
        is_complete=True,
        series_description="Classification and explanation (research, not for diagnosis)",
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = CODING_SCHEME
    scheme.CodingSchemeName = "monai-cluscam report concepts"
    scheme.CodingSchemeResponsibleOrganization = "monai-cluscam"
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.SoftwareVersions = software_version
    return sr


def read_report(dataset: Dataset) -> ClassificationReport:
    """The values of a report :func:`classification_report` wrote (read by highdicom)."""
    import highdicom as hd

    sr = hd.sr.ComprehensiveSR.from_dataset(dataset)
    probabilities: dict[str, float] = {}
    predicted = statement = ""
    boxes: dict[str, list[str]] = {}
    map_uid, sources = None, []
    for item in sr.ContentSequence:
        code = item.ConceptNameCodeSequence[0]
        if item.ValueType == "NUM":
            name = code.CodeMeaning.removeprefix("Probability of ")
            probabilities[name] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "CODE":
            predicted = item.ConceptCodeSequence[0].CodeMeaning
        elif item.ValueType == "TEXT":
            statement = item.TextValue
        elif item.ValueType == "CONTAINER":
            boxes[code.CodeValue] = [child.TextValue for child in item.ContentSequence]
        elif item.ValueType == "IMAGE":
            uid = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            if code.CodeValue == "MAP":
                map_uid = uid
            else:
                sources.append(uid)
    model, method = boxes.get("MODEL", ["", ""]), boxes.get("METHOD", ["", ""])
    parameters = dict(p.split("=", 1) for p in method[2:])
    return ClassificationReport(predicted, probabilities, model[0], model[1], method[0], parameters, statement,
                                map_uid, tuple(sources))
