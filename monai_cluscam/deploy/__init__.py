"""ClusCAM in a MONAI Deploy App SDK application (the ``deploy`` extra: ``pip install 'monai-cluscam[deploy]'``).

:class:`ClusCAMOperator` takes the ``Image`` of ``DICOMSeriesToVolumeOperator`` and the selection of
``DICOMSeriesSelectorOperator``, classifies the series with a bundle, explains the prediction and writes the
Parametric Map, the colour overlay series and the Structured Report into the application's output folder;
``examples/deploy_app/app.py`` is an application built with it, and ``docs/deploy.md`` says how to run it.
:func:`image_to_metatensor` turns the SDK's ``Image`` into the ``MetaTensor`` a bundle's preprocessing takes, on
the series' own RAS grid. This package imports without the SDK; building the operator needs it.
"""

from __future__ import annotations

from monai_cluscam.deploy.cluscam_operator import ClusCAMOperator, ClusCAMResult
from monai_cluscam.deploy.image import image_to_metatensor, link_series

__all__ = ["ClusCAMOperator", "ClusCAMResult", "image_to_metatensor", "link_series"]
