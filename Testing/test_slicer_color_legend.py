"""Colour legends of the module's outputs on a real vtkMRMLScene from the slicer-core wheel: the variance and the
difference carry one legend each (Slicer's vtkMRMLColorLegendDisplayNode) that spans their display window, the
denoised volume none; outputs are imported through the real Apply path (DenoiseRequest.import_outputs) from files
as the worker writes them, and one test draws the legend with Slicer's own colour legend displayable manager."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SPECTDenoise"))

from SPECTDenoiseLogic import outputs, volumes
from SPECTDenoiseLogic.denoising import DenoiseRequest

from SPECTDenoiseLib.io import write_volume

SHAPE = (6, 7, 8)


def _input_node(scene, units: str | None = None):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "SPECT")
    image = sitk.GetImageFromArray(np.full(SHAPE, 10.0, np.float32))
    image.SetSpacing((2.0, 3.0, 4.5))
    volumes.image_to_node(image, node)
    node.CreateDefaultDisplayNodes()
    if units is not None:
        coded = slicer.vtkCodedEntry()
        coded.SetValueSchemeMeaning(units, "UCUM", units)
        node.SetVoxelValueUnits(coded)
    return node


def _apply(scene, input_node, folder: Path, values: dict[str, np.ndarray], nodes: dict | None = None) -> dict:
    """Import the worker's output files holding ``values`` (kind → array) as Apply does; return kind → node."""
    folder.mkdir(exist_ok=True)
    geometry = volumes.node_to_image(input_node)
    request = DenoiseRequest(input_node, outputs={kind: (nodes or {}).get(kind) for kind in values})
    for kind, path in request.output_paths(folder).items():
        image = sitk.GetImageFromArray(values[kind].astype(np.float32))
        image.CopyInformation(geometry)
        write_volume(image, path)
    imported, _ = request.import_outputs(scene, folder)
    return imported


def _legends(node) -> list:
    displays = (node.GetNthDisplayNode(index) for index in range(node.GetNumberOfDisplayNodes()))
    return [display for display in displays if display.IsA("vtkMRMLColorLegendDisplayNode")]


def _window(display) -> tuple[float, float]:
    """The range a colour legend draws for a scalar volume display (vtkMRMLColorLegendDisplayableManager.cxx)."""
    return display.GetLevel() - display.GetWindow() / 2, display.GetLevel() + display.GetWindow() / 2


def _variance(scale: float = 1.0) -> np.ndarray:
    return scale * np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)


@pytest.mark.parametrize(("units", "shown"), [(None, "(image units)²"), ("Bq/ml", "(Bq/ml)²")])
def test_a_variance_output_gets_one_legend_titled_variance_in_squared_units_over_its_window(
        scene, tmp_path, units, shown):
    made = _apply(scene, _input_node(scene, units), tmp_path / "run",
                  {"denoised": _variance(), "variance": _variance()})
    (legend,) = _legends(made["variance"])
    assert legend.GetTitleText() == f"Variance ({shown}, not σ)"
    assert legend.GetPrimaryDisplayNode() is made["variance"].GetDisplayNode()
    assert _window(legend.GetPrimaryDisplayNode()) == pytest.approx(
        (0.0, np.percentile(_variance(), outputs.VARIANCE_WINDOW_PERCENTILE)), abs=1e-6)
    assert legend.GetVisibility() and legend.GetVisibility2D() and not legend.GetVisibility3D()


def test_a_second_run_on_the_same_output_keeps_one_legend_that_follows_the_new_window(scene, tmp_path):
    node = _input_node(scene)
    first = _apply(scene, node, tmp_path / "first", {"denoised": _variance(), "variance": _variance()})
    (legend,) = _legends(first["variance"])
    second = _apply(scene, node, tmp_path / "second", {"denoised": _variance(), "variance": _variance(10.0)},
                    nodes=first)
    assert second["variance"] is first["variance"]
    assert _legends(second["variance"]) == [legend]
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 1
    assert _window(legend.GetPrimaryDisplayNode())[1] == pytest.approx(
        np.percentile(_variance(10.0), outputs.VARIANCE_WINDOW_PERCENTILE))


def test_the_difference_gets_a_legend_centred_on_zero_in_the_input_units(scene, tmp_path):
    difference = _variance() - 100.0
    made = _apply(scene, _input_node(scene, "Bq/ml"), tmp_path / "run",
                  {"denoised": _variance(), "difference": difference})
    (legend,) = _legends(made["difference"])
    assert legend.GetTitleText() == "Difference, denoised − input (Bq/ml)"
    assert _window(legend.GetPrimaryDisplayNode()) == pytest.approx(
        (-np.abs(difference).max(), np.abs(difference).max()))


def test_a_denoised_volume_gets_no_legend_and_loses_one_left_from_an_earlier_kind(scene, tmp_path):
    """The denoised volume is shown like the input, which has no legend; a node that held a variance and is then
    chosen as the denoised output drops the variance's legend."""
    node = _input_node(scene)
    first = _apply(scene, node, tmp_path / "first", {"denoised": _variance(), "variance": _variance()})
    assert _legends(first["denoised"]) == [] and len(_legends(first["variance"])) == 1
    second = _apply(scene, node, tmp_path / "second", {"denoised": _variance()},
                    nodes={"denoised": first["variance"]})
    assert _legends(second["denoised"]) == []
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 0


def test_a_slice_view_showing_the_variance_draws_its_legend_from_zero_to_the_window_percentile(scene, tmp_path):
    """Slicer's own colour legend displayable manager in a Red slice view (render window never rendered) whose
    background is the variance node when the run's outputs are imported."""
    import vtk

    application = slicer.vtkMRMLApplicationLogic()
    application.SetMRMLScene(scene)
    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLApplicationLogic(application)
    slice_logic.SetMRMLScene(scene)
    slice_node = slice_logic.AddSliceNode("Red")
    logics = vtk.vtkCollection()
    logics.AddItem(slice_logic)
    application.SetSliceLogics(logics)
    window, renderer, interactor = vtk.vtkRenderWindow(), vtk.vtkRenderer(), vtk.vtkRenderWindowInteractor()
    window.SetOffScreenRendering(True)
    window.AddRenderer(renderer)
    interactor.SetRenderWindow(window)  # the manager's group needs an interactor before it gets its view node
    manager, group = slicer.vtkMRMLColorLegendDisplayableManager(), slicer.vtkMRMLDisplayableManagerGroup()
    manager.SetMRMLApplicationLogic(application)
    group.SetRenderer(renderer)
    group.AddDisplayableManager(manager)
    group.SetMRMLDisplayableNode(slice_node)

    node = _input_node(scene)
    variance = outputs.get_or_create_output(scene, node, "variance")
    slice_logic.GetSliceCompositeNode().SetBackgroundVolumeID(variance.GetID())
    _apply(scene, node, tmp_path / "run", {"denoised": _variance(), "variance": _variance()},
           nodes={"variance": variance})

    (legend,) = _legends(variance)
    actor = manager.GetColorLegendActor(legend)
    assert actor.GetVisibility()
    assert actor.GetTitle() == legend.GetTitleText()
    assert actor.GetLookupTable().GetTableRange() == pytest.approx(
        (0.0, np.percentile(_variance(), outputs.VARIANCE_WINDOW_PERCENTILE)), rel=1e-6)
    group.SetMRMLDisplayableNode(None)
