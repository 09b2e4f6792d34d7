"""Every flow of the SPECT Denoise panel, driven through the module's widget on a real MRML scene.

The widget (``SPECTDenoise.py``) runs on Slicer's own ``ScriptedLoadableModule`` and ``parameterNodeWrapper`` with
stand-in Qt widgets built from the ``.ui`` (see ``slicer_application.py``); the background commands are the real
worker, the real ``models download`` against a local Hub server and, for teaching, a stand-in simulator that
copies its input (the real simulator's physics is tested in ``test_slicer_runner.py`` and ``test_simulate.py``).
The timer that polls the runner in Slicer is stood in for by calling ``onTimer`` in a loop.
"""

from __future__ import annotations

import csv
import json
import sys
import time

import numpy as np
import pytest
from model_fixtures import SLOW_DIFFUSION, catalogue_with_diffusion, make_package
from slicer_application import FileDialog, Widget, require_slicer_sources, slicer_application

slicer = pytest.importorskip("slicer")


def _spect_node(scene, name="SPECT", shape=(6, 16, 16)):
    rng = np.random.default_rng(0)
    _, y, x = np.indices(shape)
    body = (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (0.4 * shape[1]) ** 2
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetSpacing(4.0, 4.0, 5.0)
    slicer.util.updateVolumeFromArray(node, (np.where(body, 20.0, 0.0) + rng.poisson(5.0, shape) * body)
                                      .astype(np.float32))
    node.CreateDefaultDisplayNodes()
    return node


def _views(scene, names):
    views = {}
    for name in names:
        views[name] = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        views[name].SetLayoutName(name)
    return views


@pytest.fixture
def application(scene):
    """(module, make_widget): ``make_widget(python=None)`` sets the panel up as Slicer does on first show."""
    require_slicer_sources()
    widgets = []
    with slicer_application(scene) as module:
        def make_widget(python: str | None = None):
            widget = module.SPECTDenoiseWidget(Widget(), logic=module.SPECTDenoiseLogic(python) if python else None)
            widget.setup()
            widgets.append(widget)
            return widget

        yield module, make_widget
        for widget in widgets:
            widget.cleanup()


def _pump(widget, until, timeout_s: float = 120.0) -> None:
    """Call the widget's timer slot until ``until(widget)`` holds (as Slicer's QTimer would)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        widget.onTimer()
        if until(widget):
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout_s} s: {widget.ui.statusLabel.text!r}")


def _idle(widget) -> bool:
    return not widget.logic.runner.state.busy


@pytest.fixture
def fake_simulator(tmp_path):
    """A Python stand-in: ``simulate`` copies its input to its output (or fails at fraction 0.1 with a JSON error
    event when asked to); anything else runs the real Python."""
    script = tmp_path / "python"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$5" = simulate ]; then\n'
        '  if [ "${10}" = 0.1 ] && [ -e "$(dirname "$0")/fail" ]; then\n'
        "    echo '{\"event\": \"error\", \"message\": \"The simulator ran out of disk.\", \"exit_code\": 7}'; exit 7\n"
        "  fi\n"
        '  cp "$6" "$8"; exit 0\n'
        "fi\n"
        f'exec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    return script


def test_apply_denoises_in_the_background_and_shows_the_result_outside_the_teaching_views(application, scene,
                                                                                        tmp_path):
    module, make_widget = application
    spect = _spect_node(scene)
    views = _views(scene, ["Red", "Teaching1"])
    views["Teaching1"].SetBackgroundVolumeID(spect.GetID())
    widget = make_widget()
    parameters = widget._parameterNode
    assert parameters.inputVolume is spect and widget.ui.applyButton.enabled
    parameters.model, parameters.device, parameters.makeVariance = str(make_package(tmp_path / "unet", "unet2d")), \
        "cpu", False
    widget.onApply()
    assert widget.ui.applyButton.text == "Cancel" and widget.ui.progressBar.visible
    _pump(widget, _idle)
    assert widget.logic.runner.state is module.State.DONE, widget.ui.statusLabel.text
    assert widget.ui.statusLabel.text.startswith("Done in") and widget.ui.applyButton.text == "Apply"
    assert parameters.denoisedVolume.GetName() == "SPECT denoised"
    assert parameters.differenceVolume.GetName() == "SPECT difference" and parameters.varianceVolume is None
    assert views["Red"].GetBackgroundVolumeID() == parameters.denoisedVolume.GetID()
    assert views["Teaching1"].GetBackgroundVolumeID() == spect.GetID()


def _sampling(make_widget, scene, tmp_path):
    """A panel whose Apply runs a slow diffusion model, returned once the worker is sampling (and the scene's node
    count before Apply)."""
    _spect_node(scene)
    widget = make_widget()
    widget._parameterNode.model = str(make_package(tmp_path / "diffusion", "diffusion", perturb=False,
                                                   diffusion=SLOW_DIFFUSION))
    widget._parameterNode.device = "cpu"
    nodes = scene.GetNumberOfNodes()
    widget.onApply()
    _pump(widget, lambda w: w.ui.statusLabel.text.startswith("sample "))
    return widget, nodes


def test_cancel_stops_the_worker_and_adds_nothing(application, scene, tmp_path):
    module, make_widget = application
    widget, nodes = _sampling(make_widget, scene, tmp_path)
    widget.onApply()  # the button says Cancel
    assert widget.logic.runner.state is module.State.CANCELLING and not widget.ui.applyButton.enabled
    _pump(widget, _idle, timeout_s=30)
    assert widget.ui.statusLabel.text == "Cancelled." and widget.ui.applyButton.text == "Apply"
    assert scene.GetNumberOfNodes() == nodes


def test_closing_the_scene_during_a_run_cancels_it_and_imports_nothing(application, scene, tmp_path):
    module, make_widget = application
    widget, _ = _sampling(make_widget, scene, tmp_path)
    scene.Clear(0)
    assert widget.logic.runner.state is module.State.CANCELLING
    _pump(widget, _idle, timeout_s=30)
    assert widget.logic.runner.state is module.State.IDLE and widget.logic.runner.outputs == {}
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
    assert widget._parameterNode is not None and widget._parameterNode.denoisedVolume is None


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from hub_server import HubServer

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with HubServer() as server:
        server.commit_id = server.add_repo("org/tiny", make_package(tmp_path / "tiny", "unet2d"))
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_download_runs_in_the_background_then_lists_and_selects_the_model(application, scene, hub):
    module, make_widget = application
    widget = make_widget()
    widget.ui.hubRepoLineEdit.text, widget.ui.hubRevisionLineEdit.text = "org/tiny", hub.commit_id
    widget.onDownload()
    assert widget.ui.statusLabel.text.startswith("Downloading org/tiny@") and not widget.ui.downloadButton.enabled
    _pump(widget, _idle)
    model_id = f"org/tiny@{hub.commit_id}"
    assert widget.logic.runner.state is module.State.DONE, widget.ui.statusLabel.text
    assert widget._parameterNode.model == model_id
    assert widget.ui.modelComboBox.itemData(widget.ui.modelComboBox.currentIndex) == model_id
    assert "Hugging Face Hub" in widget.ui.modelSummaryLabel.text and widget.ui.downloadButton.enabled


def test_a_failed_download_says_why_in_one_sentence(application, scene, hub):
    module, make_widget = application
    widget = make_widget()
    widget.ui.hubRepoLineEdit.text = "org/missing"
    widget.onDownload()
    _pump(widget, _idle)
    assert widget.logic.runner.state is module.State.FAILED
    assert "org/missing" in widget.ui.statusLabel.text and "Traceback" not in widget.ui.statusLabel.text
    widget.ui.hubRepoLineEdit.text = "not a repo id"
    widget.onDownload()
    assert widget.ui.statusLabel.text.startswith("Enter a Hub repository id") and _idle(widget)


def test_the_saved_model_is_selected_when_the_panel_opens(application, scene, tmp_path, monkeypatch):
    module, make_widget = application
    monkeypatch.setenv("SPECTDENOISE_CATALOGUE", str(catalogue_with_diffusion(tmp_path)))
    module.SPECTDenoiseLogic().getParameterNode().model = "tiny-diffusion"  # e.g. restored from a saved scene
    widget = make_widget()
    combo = widget.ui.modelComboBox
    assert combo.itemData(combo.currentIndex) == "tiny-diffusion"
    assert widget._parameterNode.model == "tiny-diffusion"
    assert "variance: yes" in widget.ui.modelSummaryLabel.text
    widget.onModelSelected(combo.findData("spect-unet3d"))
    assert widget._parameterNode.model == "spect-unet3d" and "variance: no" in widget.ui.modelSummaryLabel.text


def test_compare_fills_the_table_and_export_writes_it_as_csv(application, scene, tmp_path):
    module, make_widget = application
    spect = _spect_node(scene)
    widget = make_widget()
    assert not widget.ui.compareButton.enabled and not widget.ui.exportCsvButton.enabled
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenterWorld(*[float(c) for c in np.array(spect.GetOrigin()) + [30.0, 30.0, 12.0]])
    roi.SetSizeWorld(20.0, 20.0, 10.0)
    widget._parameterNode.regionNode, widget._parameterNode.weightKg = roi, 70.0
    assert widget.ui.compareButton.enabled
    widget.onCompare()
    table = widget._parameterNode.comparisonTable
    assert table is not None and table.GetNumberOfRows() == 1 and widget.ui.comparisonTableView.tableNode is table
    assert widget.ui.statusLabel.text.startswith("SUV columns are empty") and widget.ui.exportCsvButton.enabled
    FileDialog.answer = str(tmp_path / "rois.csv")
    widget.onExportCsv()
    with open(tmp_path / "rois.csv", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["Region", "Volume", "Volume ml"] and rows[1][:2] == ["box", "low-count"]
    assert widget.ui.statusLabel.text == f"Saved {tmp_path / 'rois.csv'}."


def test_teaching_series_is_simulated_in_the_background_and_laid_out_side_by_side(application, scene,
                                                                                  fake_simulator):
    module, make_widget = application
    full = _spect_node(scene, "full")
    views = _views(scene, [f"Teaching{i}" for i in range(1, 7)])
    widget = make_widget(python=str(fake_simulator))
    widget._parameterNode.teachingFractions = "0.5, 10%"
    widget.onTeaching()
    assert widget.ui.teachingButton.text == "Cancel"
    _pump(widget, _idle)
    assert widget.logic.runner.state is module.State.DONE, widget.ui.statusLabel.text
    names = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
             for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    assert names == ["full", "full 50% counts", "full 10% counts"]
    layout = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
    assert layout.GetCurrentLayoutDescription().count('class="vtkMRMLSliceNode"') == 3
    shown = [scene.GetNodeByID(views[f"Teaching{i}"].GetBackgroundVolumeID()).GetName() for i in (1, 2, 3)]
    assert shown == names and views["Teaching4"].GetBackgroundVolumeID() is None
    # the layout's new slice views start at the origin with a default field of view: each is fitted to its volume
    assert slicer.app.sliceViewResets == 1
    assert widget.ui.teachingButton.text == "Create low-count series"
    del full


def test_teaching_with_denoising_is_one_job_that_simulates_then_denoises_each(application, scene, fake_simulator,
                                                                              tmp_path):
    module, make_widget = application
    _spect_node(scene, "full")
    views = _views(scene, [f"Teaching{i}" for i in range(1, 7)])
    widget = make_widget(python=str(fake_simulator))
    parameters = widget._parameterNode
    parameters.teachingFractions, parameters.teachingDenoise = "0.5, 10%", True
    parameters.model, parameters.device = str(make_package(tmp_path / "unet", "unet2d")), "cpu"
    widget.onTeaching()
    messages = set()
    _pump(widget, lambda w: messages.add(w.ui.statusLabel.text) or _idle(w), timeout_s=240)
    assert widget.logic.runner.state is module.State.DONE, widget.ui.statusLabel.text
    assert {"Denoising 50% counts (1 of 2)…", "Denoising 10% counts (2 of 2)…"} <= messages
    shown = [scene.GetNodeByID(views[f"Teaching{i}"].GetBackgroundVolumeID()).GetName() for i in range(1, 7)]
    assert shown == ["full", "full 50% counts", "full 10% counts",
                     "full", "full 50% counts denoised", "full 10% counts denoised"]
    layout = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
    assert layout.GetCurrentLayoutDescription().count('type="horizontal"') == 2


def test_a_failing_teaching_step_imports_nothing_and_shows_the_error_event(application, scene, fake_simulator):
    module, make_widget = application
    _spect_node(scene, "full")
    (fake_simulator.parent / "fail").write_text("")
    widget = make_widget(python=str(fake_simulator))
    widget._parameterNode.teachingFractions = "0.5, 0.1"
    nodes = scene.GetNumberOfNodes()
    widget.onTeaching()
    _pump(widget, _idle)
    assert widget.logic.runner.state is module.State.FAILED
    assert widget.ui.statusLabel.text == "The simulator ran out of disk."
    assert scene.GetNumberOfNodes() == nodes


def test_unreadable_fractions_are_one_sentence_on_the_status_line(application, scene):
    _, make_widget = application
    _spect_node(scene)
    widget = make_widget()
    widget._parameterNode.teachingFractions = "half"
    widget.onTeaching()
    assert widget.ui.statusLabel.text.startswith("'half' is not a count fraction") and _idle(widget)


def test_the_sample_study_is_registered_with_the_files_and_checksums_shipped(application, monkeypatch):
    import hashlib
    import types

    module, _ = application
    registered = {}

    def register(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                 customDownloader=None, thumbnailFileName=None, loadFileTypes=None, loadFiles=None,
                 loadFileProperties=None, checksums=None, loadFileType=None):
        """SampleDataLogic.registerCustomSampleDataSource's keywords (Slicer ≥ 5.7: loadFileTypes; the singular
        loadFileType is deprecated), so a misspelt keyword fails here as it would in Slicer."""
        registered.update(category=category, sampleName=sampleName, uris=uris, fileNames=fileNames,
                          nodeNames=nodeNames, thumbnailFileName=thumbnailFileName, loadFileTypes=loadFileTypes,
                          checksums=checksums)

    sample_data = types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(registerCustomSampleDataSource=register))
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    module.registerSampleData()
    assert registered["category"] == "SPECT Denoise" and len(registered["uris"]) == 4
    assert registered["loadFileTypes"] == ["VolumeFile"] * 3 + ["SegmentationFile"]
    for uri, checksum in zip(registered["uris"], registered["checksums"]):
        from urllib.parse import unquote, urlparse

        data = open(unquote(urlparse(uri).path), "rb").read()
        assert checksum == "SHA256:" + hashlib.sha256(data).hexdigest()
    assert json.dumps(registered["nodeNames"]) and open(registered["thumbnailFileName"], "rb").read(4) == b"\x89PNG"


def test_comparison_and_export_problems_are_one_sentence_on_the_status_line(application, scene, tmp_path):
    _, make_widget = application
    _spect_node(scene)
    widget = make_widget()
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far away")
    roi.SetCenterWorld(5000.0, 5000.0, 5000.0)
    roi.SetSizeWorld(10.0, 10.0, 10.0)
    widget._parameterNode.regionNode = roi
    widget.onCompare()
    assert "far away" in widget.ui.statusLabel.text and widget._parameterNode.comparisonTable is None
    assert not widget.ui.exportCsvButton.enabled
    roi.SetCenterWorld(30.0, 30.0, 12.0)
    roi.SetSizeWorld(20.0, 20.0, 10.0)
    widget.onCompare()
    FileDialog.answer = str(tmp_path / "missing" / "rois.csv")
    widget.onExportCsv()
    assert widget.ui.statusLabel.text.startswith("Output folder") and not (tmp_path / "missing").exists()


def test_a_run_that_ends_while_another_module_is_shown_still_delivers_its_outputs(application, scene, tmp_path):
    module, make_widget = application
    _spect_node(scene)
    widget = make_widget()
    widget._parameterNode.model, widget._parameterNode.device = str(make_package(tmp_path / "unet", "unet2d")), "cpu"
    widget.onApply()
    widget.exit()
    _pump(widget, _idle)
    assert widget.logic.runner.state is module.State.DONE, widget.ui.statusLabel.text
    assert module.SPECTDenoiseLogic().getParameterNode().denoisedVolume.GetName() == "SPECT denoised"
    widget.enter()
    assert widget._parameterNode.denoisedVolume.GetName() == "SPECT denoised" and widget.ui.applyButton.enabled


def test_variance_is_asked_only_of_a_model_that_gives_one(application, scene, tmp_path, monkeypatch):
    module, _ = application
    monkeypatch.setenv("SPECTDENOISE_CATALOGUE", str(catalogue_with_diffusion(tmp_path)))
    _spect_node(scene)
    logic = module.SPECTDenoiseLogic()
    parameters = logic.getParameterNode()
    parameters.inputVolume = scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
    assert parameters.makeVariance and parameters.model == ""  # the panel's defaults: default model, box ticked
    assert set(logic.denoiseRequest(parameters).outputs) == {"denoised", "difference"}
    parameters.model = "tiny-diffusion"
    assert set(logic.denoiseRequest(parameters).outputs) == {"denoised", "difference", "variance"}
    parameters.model = str(make_package(tmp_path / "diffusion", "diffusion"))
    assert "variance" in logic.denoiseRequest(parameters).outputs
    parameters.model = "org/not-downloaded@main"  # known only when it runs: the worker decides
    assert "variance" in logic.denoiseRequest(parameters).outputs


def test_a_panel_made_without_a_parent_gets_its_logic_and_observers_before_setup(application, scene):
    """With no parent, Slicer's ScriptedLoadableModuleWidget.__init__ makes a top-level panel and runs setup() itself
    (ScriptedLoadableModule.py); the injected logic is used and cleanup() removes every observer setup() added."""
    module, _ = application
    logic = module.SPECTDenoiseLogic(sys.executable)
    widget = module.SPECTDenoiseWidget(None, logic=logic)
    assert widget.logic is logic and widget._parameterNode is not None
    assert widget.hasObserver(scene, scene.StartCloseEvent, widget.onSceneStartClose)
    widget.cleanup()
    assert widget.Observations == []


def _pytorch_extension(install):
    """A stand-in for the PyTorch extension's module: ``installTorch`` runs ``install``."""
    import types

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            return install(torchVersionRequirement)

    return types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic)


def _offline_install(requirement):
    import subprocess

    raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "light_the_torch", "install", f"torch{requirement}"])


def test_a_failed_torch_installation_names_what_is_missing_and_starts_nothing(application, scene, tmp_path,
                                                                              monkeypatch, caplog):
    """PyTorchUtils raises when light-the-torch fails (offline): Apply shows the one error sentence instead of letting
    the exception out of the button's slot."""
    _, make_widget = application
    _spect_node(scene)
    widget = make_widget()
    (tmp_path / "requirements.txt").write_text("torch>=999\n", encoding="utf-8")
    monkeypatch.setattr(widget, "resourcePath", lambda name: str(tmp_path / name))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", _pytorch_extension(_offline_install))
    widget.onApply()
    assert widget.logic.runner.state.value == "idle"
    assert any("Installing the Python packages failed" in r.getMessage() and "Still missing: torch>=999" in
               r.getMessage() for r in caplog.records)


def test_torch_is_left_to_the_pytorch_extension_and_never_given_to_pip(application, scene, tmp_path, monkeypatch,
                                                                      caplog):
    """pip would replace the extension's GPU build of torch with PyPI's: only the other packages go to pip_ensure."""
    _, make_widget = application
    _spect_node(scene)
    widget = make_widget()
    (tmp_path / "requirements.txt").write_text("torch>=999\nno-such-distribution-spectdenoise>=1\n",
                                               encoding="utf-8")
    monkeypatch.setattr(widget, "resourcePath", lambda name: str(tmp_path / name))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", _pytorch_extension(lambda requirement: object()))
    caplog.set_level("INFO")
    assert not widget.ensureDependencies()
    skipped = [r.getMessage() for r in caplog.records if "skipping pip_ensure" in r.getMessage()]
    assert skipped and all("torch" not in message for message in skipped)


def test_the_category_is_translated_in_the_context_slicer_uses_for_module_categories(application, monkeypatch):
    """Module categories are translated in the qSlicerAbstractCoreModule context (the template's translate call), so
    that in a translated Slicer the panel joins the other Nuclear Medicine modules instead of an English folder."""
    import types

    module, _ = application
    catalogue = {("qSlicerAbstractCoreModule", "Nuclear Medicine"): "Médecine nucléaire"}
    monkeypatch.setattr(slicer.app, "translate", lambda context, text: catalogue.get((context, text), text))
    parent = types.SimpleNamespace(path=module.__file__)
    module.SPECTDenoise(parent)
    assert parent.categories == ["Médecine nucléaire"]


def test_an_output_that_is_an_input_is_refused_in_one_sentence_and_the_input_kept(application, scene):
    """The output selectors list every scalar volume, the input included; choosing it (or one node for two outputs)
    would overwrite the input, so Apply says so on the status line and starts nothing."""
    _, make_widget = application
    spect = _spect_node(scene)
    other = _spect_node(scene, "other")
    before = slicer.util.arrayFromVolume(spect).copy()
    widget = make_widget()
    parameters = widget._parameterNode
    for denoised, difference in ((spect, None), (other, other)):
        parameters.denoisedVolume, parameters.differenceVolume = denoised, difference
        widget.onApply()
        assert widget.logic.runner.state.value == "idle"
        assert "its own volume" in widget.ui.statusLabel.text
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(spect), before)


def test_closing_the_scene_empties_the_comparison_view_and_disables_export(application, scene):
    """The table view holds no scene (see test_slicer_ui.py), so the panel lets go of the closed scene's table."""
    _, make_widget = application
    _spect_node(scene)
    widget = make_widget()
    _compare_in_box(widget, scene)
    assert widget.ui.comparisonTableView.tableNode is not None and widget.ui.exportCsvButton.enabled
    scene.Clear(0)
    assert widget.ui.comparisonTableView.tableNode is None and not widget.ui.exportCsvButton.enabled


def test_the_help_and_the_variance_controls_say_what_the_variance_means_and_how_it_is_shown(application):
    """One text (VARIANCE_MEANING) for the CLI, the cards and the panel; the help also says what the heat map
    shows (the variance itself, not σ, up to the percentile the display uses)."""
    import types

    from SPECTDenoiseLib.models.config import VARIANCE_MEANING
    from SPECTDenoiseLogic.outputs import VARIANCE_WINDOW_PERCENTILE

    module, make_widget = application
    parent = types.SimpleNamespace(path=module.__file__)
    module.SPECTDenoise(parent)
    assert VARIANCE_MEANING in parent.helpText
    assert (f"heat map of the variance itself (image units squared, not σ) from 0 to its "
            f"{VARIANCE_WINDOW_PERCENTILE:g}th percentile") in parent.helpText
    widget = make_widget()
    assert widget.ui.varianceCheckBox.toolTip == widget.ui.varianceVolumeSelector.toolTip == VARIANCE_MEANING


def test_the_shipped_diffusion_models_card_line_gives_its_measured_coverage(application):
    """The model card line shows the measured coverage from the shipped card (written by `models card` from the
    benchmark); a deterministic model's line has none."""
    from SPECTDenoiseLib import hub

    _, make_widget = application
    widget = make_widget()
    combo = widget.ui.modelComboBox
    widget.onModelSelected(combo.findData("spect-diffusion-refine"))
    measured = hub.variance_measured(hub.RESOURCES / "Models" / "spect-diffusion-refine")
    assert measured and measured[0] in widget.ui.modelSummaryLabel.text.splitlines()
    widget.onModelSelected(combo.findData("spect-unet25d"))
    assert "Variance measured" not in widget.ui.modelSummaryLabel.text


def _compare_in_box(widget, scene) -> None:
    """Put a 20 × 20 × 10 mm markups ROI over the body of :func:`_spect_node` and press Compute table."""
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenterWorld(30.0, 30.0, 12.0)
    roi.SetSizeWorld(20.0, 20.0, 10.0)
    widget._parameterNode.regionNode = roi
    widget.onCompare()

class DICOMDatabase:
    """Stand-in for Slicer's ``ctkDICOMDatabase`` (the C++ class is not in slicer-core): ``fileForInstance`` answers
    the file stored for a SOP instance UID and, as ctkDICOMDatabase.cpp does, an empty string for one it lacks."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")


@pytest.mark.parametrize("stored", [{}, {"1.2.3": "/no/such/folder/IM0001.dcm"}],
                         ids=["instance-not-in-database", "file-gone"])
def test_a_dicom_volume_whose_files_are_gone_is_compared_without_its_tags(application, scene, stored):
    """A volume keeps its DICOM.instanceUIDs attribute in a saved scene or after its series left the database; the
    table is still computed, and the status line asks for the SUV values instead of naming a folder."""
    _, make_widget = application
    spect = _spect_node(scene)
    spect.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
    slicer.dicomDatabase = DICOMDatabase(stored)
    widget = make_widget()
    _compare_in_box(widget, scene)
    assert widget.ui.statusLabel.text.startswith("SUV columns are empty"), widget.ui.statusLabel.text
    assert widget._parameterNode.comparisonTable.GetNumberOfRows() == 1


def test_the_suv_of_a_dicom_volume_comes_from_the_file_the_database_names(application, scene, make_image, tmp_path):
    from SPECTDenoiseLib.dicom import write_dicom_series

    _, make_widget = application
    tags = {"PatientWeight": 75.0, "Units": "BQML", "DecayCorrection": "START", "SeriesDate": "20240517",
            "SeriesTime": "103000", "RadiopharmaceuticalInformationSequence": [
                {"RadiopharmaceuticalStartTime": "090000", "RadionuclideTotalDose": 370e6,
                 "RadionuclideHalfLife": 21624.12}]}
    files = write_dicom_series(make_image(integer=True), tmp_path / "series", "NM", tags=tags)
    spect = _spect_node(scene)
    spect.SetAttribute("DICOM.instanceUIDs", "1.2.3")
    slicer.dicomDatabase = DICOMDatabase({"1.2.3": str(files[0])})
    widget = make_widget()
    _compare_in_box(widget, scene)
    assert widget.ui.statusLabel.text == "Comparison table updated."
    assert np.isfinite(widget.logic.rows[0].suv_mean)


def test_an_output_deleted_during_the_run_is_made_again_and_the_panel_stays_usable(application, scene, tmp_path):
    """The user picks an existing node for the denoised output, then deletes it (Data module) while the worker runs:
    the result goes to a new node named after the input, and the run ends (it must not stay in 'importing')."""
    module, make_widget = application
    _spect_node(scene)
    widget = make_widget()
    chosen = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my output")
    parameters = widget._parameterNode
    parameters.model, parameters.device = str(make_package(tmp_path / "unet", "unet2d")), "cpu"
    parameters.makeVariance, parameters.denoisedVolume = False, chosen
    widget.onApply()
    scene.RemoveNode(chosen)
    _pump(widget, _idle)
    assert widget.logic.runner.state is module.State.DONE, widget.ui.statusLabel.text
    assert parameters.denoisedVolume.GetName() == "SPECT denoised" and parameters.denoisedVolume.GetScene() is scene
    assert widget.ui.applyButton.text == "Apply" and widget.ui.applyButton.enabled


def test_a_ct_registered_by_a_transform_is_refused_in_one_sentence_before_anything_runs(application, scene):
    """The background commands get the CT without its Slicer transform and match it to the SPECT by position, so a
    CT moved by a registration transform would be used where it was before registration."""
    import vtk

    module, make_widget = application
    _spect_node(scene)
    ct = _spect_node(scene, "CT")
    registration = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(1, 3, 15.0)
    registration.SetMatrixTransformToParent(shift)
    ct.SetAndObserveTransformNodeID(registration.GetID())
    widget = make_widget()
    widget._parameterNode.ctVolume = ct
    for start in (widget.onApply, widget.onTeaching):
        start()
        assert widget.ui.statusLabel.text.startswith("'CT' is placed relative to 'SPECT' by a transform")
        assert widget.logic.runner.state is module.State.IDLE
