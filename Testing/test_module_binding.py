"""The panel's .ui and the module's one parameter class agree, by the rules of Slicer's own GUI connectors.

For every widget with a ``SlicerParameterName``, ``SPECTDenoiseParameterNode`` has that field, and Slicer's
``parameterNodeWrapper.createGuiConnector`` (the real ``guiConnectors.py``) accepts the field's annotation for the
widget's class without changing the range or the choices the .ui shows (an unannotated ``int`` on a spin box would
reset its range to ±2³¹; a plain ``str`` on a combo box is refused)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from slicer_application import UI_FILE, build_ui, require_slicer_sources, slicer_application

BOUND = {element.get("name"): element.find("property[@name='SlicerParameterName']/string").text
         for element in ET.parse(UI_FILE).iter("widget")
         if element.find("property[@name='SlicerParameterName']/string") is not None}


@pytest.fixture
def module(scene):
    require_slicer_sources()
    with slicer_application(scene) as module:
        yield module


def test_the_ui_binds_the_inputs_options_outputs_and_teaching_fields():
    assert {"inputVolume", "ctVolume", "referenceVolume", "device", "samples", "steps", "seed", "regionNode",
            "teachingFractions", "teachingDenoise"} <= set(BOUND.values())


def test_every_bound_widget_names_a_field_of_the_parameter_class(module):
    assert set(BOUND.values()) - set(module.SPECTDenoiseParameterNode.allParameters) == set()


@pytest.mark.parametrize("widget_name", sorted(BOUND))
def test_slicers_gui_connector_accepts_the_field_and_keeps_the_ui_range_and_choices(module, widget_name):
    import slicer

    widget = getattr(build_ui(), widget_name)
    shown = (widget.minimum, widget.maximum, [widget.itemText(i) for i in range(widget.count)])
    datatype = module.SPECTDenoiseParameterNode.dataType(BOUND[widget_name])
    connector = slicer.parameterNodeWrapper.createGuiConnector(widget, datatype)
    assert connector.widget() is widget
    assert (widget.minimum, widget.maximum, [widget.itemText(i) for i in range(widget.count)]) == shown


def test_slicer_refuses_the_annotations_that_broke_the_panel(module):
    import slicer
    from slicer.parameterNodeWrapper import createGuiConnector

    ui = build_ui()
    with pytest.raises(RuntimeError, match="requires the Choice annotation"):
        createGuiConnector(ui.deviceComboBox, str)
    createGuiConnector(ui.samplesSpinBox, int)
    assert (ui.samplesSpinBox.minimum, ui.samplesSpinBox.maximum) == (-(2**31), 2**31 - 1)
    assert slicer.parameterNodeWrapper.isNodeOrUnionOfNodes(module.SPECTDenoiseParameterNode.dataType("regionNode"))


def test_the_parameter_node_is_created_with_defaults_and_keeps_every_value(module, scene):
    logic = module.SPECTDenoiseLogic()
    parameters = logic.getParameterNode()
    assert (parameters.device, parameters.samples, parameters.regionNode, parameters.model) == ("auto", 0, None, "")
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "SPECT")
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    parameters.inputVolume, parameters.regionNode, parameters.device, parameters.samples = volume, roi, "cpu", 4
    parameters.model, parameters.weightKg, parameters.teachingDenoise = "org/model@abc123", 72.5, True
    again = logic.getParameterNode()  # a new wrapper reads what the scripted module node holds
    assert (again.inputVolume, again.regionNode, again.device, again.samples) == (volume, roi, "cpu", 4)
    assert (again.model, again.weightKg, again.teachingDenoise) == ("org/model@abc123", 72.5, True)
    again.regionNode = segmentation
    assert logic.getParameterNode().regionNode is segmentation
    with pytest.raises(ValueError):
        again.samples = -1  # WithinRange, as the spin box
    with pytest.raises(ValueError):
        again.device = "gpu"  # Choice, as the combo box


def test_connect_gui_writes_values_to_the_widgets_and_reads_them_back(module):
    parameters = module.SPECTDenoiseLogic().getParameterNode()
    ui = build_ui()
    tag = parameters.connectGui(ui)
    parameters.samples, parameters.device = 5, "cuda"
    assert ui.samplesSpinBox.value == 5 and ui.deviceComboBox.itemText(ui.deviceComboBox.currentIndex) == "cuda"
    ui.stepsSpinBox.value = 12
    ui.stepsSpinBox.valueChanged.emit(12)
    assert parameters.steps == 12
    parameters.disconnectGui(tag)


def test_volume_selectors_offer_plain_scalar_volumes_only_as_slicers_template_does():
    """``showChildNodeTypes`` is true by default, so a vtkMRMLScalarVolumeNode selector also lists labelmaps and
    vector, DWI and tensor volumes (their classes derive from it); Slicer's scripted-module template turns it off
    (Utilities/Templates/Modules/Scripted/Resources/UI/TemplateKey.ui). A labelmap picked as an output had its voxels
    overwritten before its labelmap display node refused the scalar display; an RGB volume reached the worker as
    three channels. The GUI connector sets only ``nodeTypes`` (guiConnectors.py, qMRMLNodeComboBoxToNodeConnector)."""
    selectors = [element for element in ET.parse(UI_FILE).iter("widget")
                 if element.get("class") == "qMRMLNodeComboBox"
                 and element.find("property[@name='nodeTypes']/stringlist/string").text == "vtkMRMLScalarVolumeNode"]
    assert len(selectors) == 6
    for element in selectors:
        shown = element.find("property[@name='showChildNodeTypes']/bool")
        assert shown is not None and shown.text == "false", element.get("name")
