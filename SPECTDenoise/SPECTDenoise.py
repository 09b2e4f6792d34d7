"""SPECT Denoise: deep-learning denoising of low-count SPECT in 3D Slicer.

The widget only binds the panel to the logic. MRML work lives in the Qt-free ``SPECTDenoiseLogic`` package
(tested with slicer-core); models run in a background worker process (``SPECTDenoiseLib.worker``) and teaching series
are simulated by background ``python -m SPECTDenoiseLib simulate`` processes, so Slicer never imports torch and stays
responsive; Cancel kills the running process tree.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from importlib.util import find_spec

import qt
import slicer
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SPECTDenoiseLogic import comparison, parameters, teaching
from SPECTDenoiseLogic.denoising import DenoiseRequest
from SPECTDenoiseLogic.process import JsonLinesProcess
from SPECTDenoiseLogic.runner import BackgroundRunner, Job, State

# import name → pip requirement; torch comes through the PyTorch extension when it is installed.
REQUIREMENTS = {"monai": "monai>=1.5", "huggingface_hub": "huggingface_hub>=0.30", "safetensors": "safetensors>=0.4",
                "pydicom": "pydicom>=2.4", "skimage": "scikit-image>=0.22", "scipy": "scipy>=1.10"}
TORCH_REQUIREMENT = ">=2.8"


class SPECTDenoise(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SPECT Denoise"
        self.parent.categories = ["Nuclear Medicine"]
        self.parent.dependencies = []
        self.parent.contributors = ["SPECTDenoise contributors"]
        self.parent.helpText = (
            "Denoise low-count SPECT with deep learning (U-Net, U²-Net with CT, conditional DDPM with a per-voxel "
            "variance). Choose the low-count volume, a model and Apply; the run happens in the background and can "
            "be cancelled. Outputs: <i>denoised</i>, <i>difference</i> (denoised − input) and, for DDPM models, "
            "<i>variance</i> (where the model is unsure). Compare regions (markups ROI or segmentation) in a table "
            "with SUVmean/max/peak, and create low-count teaching series. Denoised images are for research and "
            "teaching; check them against the original. "
            "See <a href='https://github.com/spectdenoise/SPECTDenoise'>the documentation</a>.")
        self.parent.acknowledgementText = (
            "Builds on 3D Slicer, MONAI, PyTorch, SimpleITK and huggingface_hub. Methods follow published work on "
            "U-Net, U²-Net and diffusion denoising of low-count SPECT (see the README's references).")


SPECTDenoiseParameterNode = parameterNodeWrapper(
    type("SPECTDenoiseParameterNode", (), parameters.wrapper_namespace(lambda name: getattr(slicer, name))))


class SPECTDenoiseLogic(ScriptedLoadableModuleLogic):
    """Joins the Qt-free pieces for the widget: the denoise runner, model list, comparison and teaching."""

    def __init__(self, python: str | None = None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.python = python or shutil.which("PythonSlicer") or sys.executable
        self.runner = BackgroundRunner(slicer.mrmlScene, self.python)
        self.rows: list[comparison.ComparisonRow] = []

    def getParameterNode(self):
        return SPECTDenoiseParameterNode(super().getParameterNode())

    def request(self, values: parameters.SPECTDenoiseParameters) -> DenoiseRequest:
        """The worker request for the panel's values (outputs created when their selector is empty)."""
        outputs = {"denoised": values.denoisedVolume}
        if values.makeDifference:
            outputs["difference"] = values.differenceVolume
        if values.makeVariance:
            outputs["variance"] = values.varianceVolume
        return DenoiseRequest(values.inputVolume, values.ctVolume, values.model or None, values.device, outputs,
                              values.samples or None, values.steps or None, values.seed)

    def lowCountRequest(self, values: parameters.SPECTDenoiseParameters) -> teaching.LowCountRequest:
        """The teaching series for the panel's values (raises InputError for unreadable fractions)."""
        return teaching.LowCountRequest(values.inputVolume, teaching.parse_fractions(values.teachingFractions),
                                        values.ctVolume, values.seed)

    def seriesDenoiseRequests(self, series: list, values: parameters.SPECTDenoiseParameters) -> list[DenoiseRequest]:
        """One denoised-only worker request per teaching volume, with the panel's model and device."""
        return [DenoiseRequest(node, values.ctVolume, values.model or None, values.device, {"denoised": None})
                for node in series]

    def compare(self, values: parameters.SPECTDenoiseParameters) -> tuple[slicer.vtkMRMLTableNode, str]:
        """Fill the comparison table; return it and a note on SUV (empty when SUV is known)."""
        volumes = {"low-count": values.inputVolume}
        if values.denoisedVolume is not None:
            volumes["denoised"] = values.denoisedVolume
        if values.referenceVolume is not None:
            volumes["reference"] = values.referenceVolume
        scale, note = comparison.suv_scale(dicomTags(values.inputVolume), values.weightKg, values.doseMBq,
                                           values.calibration)
        self.rows = comparison.compare_volume_nodes(volumes, values.regionNode, scale,
                                                    "reference" if "reference" in volumes else None)
        table = values.comparisonTable or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "SPECT ROI comparison")
        return comparison.fill_table(table, self.rows), note


def dicomTags(volume) -> dict | None:
    """DICOM tags of the series ``volume`` was loaded from (None when it did not come from the DICOM database)."""
    uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or slicer.dicomDatabase is None:
        return None
    from SPECTDenoiseLib.dicom import read_dicom_tags

    return read_dicom_tags(slicer.dicomDatabase.fileForInstance(uids[0]))


class SPECTDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel to :class:`SPECTDenoiseLogic` (injectable for tests)."""

    def __init__(self, parent=None, logic: SPECTDenoiseLogic | None = None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self._parameterNode = None
        self._queue: list = []
        self._download = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.layout.addWidget(slicer.util.loadUI(self.resourcePath("UI/SPECTDenoise.ui")))
        self.ui = slicer.util.childWidgetVariables(self.layout.itemAt(0).widget())
        self.layout.itemAt(0).widget().setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or SPECTDenoiseLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onTimer)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.downloadButton.clicked.connect(self.onDownload)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.ui.compareButton.clicked.connect(self.onCompare)
        self.ui.exportCsvButton.clicked.connect(self.onExportCsv)
        self.ui.teachingButton.clicked.connect(self.onTeaching)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, lambda *_: self.logic.runner.cancel())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, lambda *_: self.setParameterNode())
        self.fillModels()
        self.setParameterNode()

    def cleanup(self):
        self.logic.runner.cancel()
        self.logic.runner.wait(self.logic.runner.grace_s + 1)
        self.removeObservers()

    def setParameterNode(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiConnection)
            self.removeObserver(self._parameterNode, slicer.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = self.logic.getParameterNode()
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        self._guiConnection = self._parameterNode.connectGui(self.ui)
        self.addObserver(self._parameterNode, slicer.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def values(self) -> parameters.SPECTDenoiseParameters:
        return parameters.from_object(self._parameterNode)

    def updateButtons(self, *_):
        state = self.logic.runner.state
        hasInput = self._parameterNode is not None and self._parameterNode.inputVolume is not None
        self.ui.applyButton.text = "Cancel" if state.busy else "Apply"
        self.ui.applyButton.enabled = state is not State.CANCELLING and (hasInput or state.busy)
        self.ui.compareButton.enabled = hasInput and self._parameterNode.regionNode is not None
        self.ui.exportCsvButton.enabled = bool(self.logic.rows)
        self.ui.teachingButton.text = "Cancel" if state.busy else "Create low-count series"
        self.ui.teachingButton.enabled = state is not State.CANCELLING and (hasInput or state.busy)
        self.ui.progressBar.visible = state.busy

    def onApply(self):
        if self.logic.runner.state.busy:
            self._queue = []
            self.show(self.logic.runner.cancel())
        elif self.ensureDependencies():
            self.start(self.logic.request(self.values()))

    def start(self, job: Job):
        self.show(self.logic.runner.start(job))
        self.timer.start()

    def onTimer(self):
        self.show(self.logic.runner.poll())
        if self._download is not None and self._download.exit_code() is not None:
            self.finishDownload()
        if not self.logic.runner.state.busy and self._download is None:
            self.timer.stop()
            if self._queue and self.logic.runner.state is State.DONE:
                self.start(self._queue.pop(0))

    def show(self, events):
        for event in events:
            if event.fraction is not None:
                self.ui.progressBar.value = int(100 * event.fraction)
            self.ui.statusLabel.text = event.message
            if event.state is State.DONE:
                self.showOutputs()
        self.updateButtons()

    def showOutputs(self):
        job, outputs = self.logic.runner.job, self.logic.runner.outputs
        if isinstance(job, teaching.LowCountRequest):
            self.showSeries(job.full_node, list(outputs.values()))
            return
        self._parameterNode.denoisedVolume = outputs.get("denoised")
        self._parameterNode.differenceVolume = outputs.get("difference", self._parameterNode.differenceVolume)
        self._parameterNode.varianceVolume = outputs.get("variance", self._parameterNode.varianceVolume)
        slicer.util.setSliceViewerLayers(background=outputs["denoised"], foreground=None, fit=False)

    def fillModels(self):
        from SPECTDenoiseLib import hub

        self.ui.modelComboBox.clear()
        for entry in hub.list_models():
            label = entry["id"] + (" (default)" if entry["default"] else "") + ("" if entry["available"] else " ↓")
            self.ui.modelComboBox.addItem(label, entry["id"])
        index = self.ui.modelComboBox.findData(self._parameterNode.model if self._parameterNode else "")
        self.ui.modelComboBox.setCurrentIndex(max(index, 0))

    def onModelChanged(self, index: int):
        from SPECTDenoiseLib import hub
        from SPECTDenoiseLib.errors import SPECTDenoiseError

        model = self.ui.modelComboBox.itemData(index)
        if self._parameterNode is None or model is None:
            return
        self._parameterNode.model = model
        try:
            config = hub.model_info(model)["config"]
        except SPECTDenoiseError as error:
            self.ui.modelSummaryLabel.text = str(error)
            return
        self.ui.modelSummaryLabel.text = (
            f"{config['description']}\nCount fractions: {', '.join(map(str, config['count_fractions'])) or '?'}; "
            f"needs CT: {'yes' if 'ct' in config['input_channels'] else 'no'}; "
            f"variance: {'yes' if config['kind'] == 'diffusion' else 'no'}.")

    def onDownload(self):
        repo, revision = self.ui.hubRepoLineEdit.text.strip(), self.ui.hubRevisionLineEdit.text.strip()
        if not repo:
            self.ui.statusLabel.text = "Enter a Hub repository id such as organisation/model-name."
            return
        self._downloadId = f"{repo}@{revision}" if revision else repo
        handle, log = tempfile.mkstemp(prefix="spectdenoise-download-", suffix=".log")
        os.close(handle)
        self._download = JsonLinesProcess([self.logic.python, "-m", "SPECTDenoiseLib", "models", "download",
                                           self._downloadId], log)
        self.ui.downloadButton.enabled = False
        self.ui.statusLabel.text = f"Downloading {self._downloadId} in the background…"
        self.timer.start()

    def finishDownload(self):
        code, process, self._download = self._download.exit_code(), self._download, None
        self.ui.downloadButton.enabled = True
        tail = process.stderr_tail().splitlines()
        self.ui.statusLabel.text = (f"Downloaded {self._downloadId}." if code == 0
                                    else (tail[-1] if tail else f"Download failed (exit code {code})."))
        process.stderr_path.unlink(missing_ok=True)
        self.fillModels()

    def onCompare(self):
        with slicer.util.tryWithErrorDisplay("Could not compute the comparison table.", waitCursor=True):
            table, note = self.logic.compare(self.values())
            self._parameterNode.comparisonTable = table
            self.ui.comparisonTableView.setMRMLTableNode(table)
            self.ui.statusLabel.text = f"SUV columns are empty: {note}" if note else "Comparison table updated."
        self.updateButtons()

    def onExportCsv(self):
        path = qt.QFileDialog.getSaveFileName(self.parent, "Export comparison", "rois.csv", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not write the CSV file."):
                comparison.write_csv(self.logic.rows, path)

    def onTeaching(self):
        if self.logic.runner.state.busy:
            self.onApply()
            return
        with slicer.util.tryWithErrorDisplay("Could not create the low-count series."):
            job = self.logic.lowCountRequest(self.values())
            if self.ensureDependencies():
                self.start(job)

    def showSeries(self, full, series):
        layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
        teaching.use_side_by_side_layout(layoutNode, len(series) + 1)
        slicer.app.processEvents()
        teaching.show_side_by_side(slicer.mrmlScene, [full] + series)
        values = self.values()
        if values.teachingDenoise:
            self._queue = self.logic.seriesDenoiseRequests(series, values)

    def ensureDependencies(self) -> bool:
        """Install what the worker needs into Slicer's Python after a confirmation; False if not possible."""
        missing = [requirement for module, requirement in REQUIREMENTS.items() if find_spec(module) is None]
        needTorch = find_spec("torch") is None
        if not missing and not needTorch:
            return True
        if not online():
            slicer.util.errorDisplay("SPECT Denoise needs Python packages that are not installed "
                                     f"({', '.join(missing + (['torch'] if needTorch else []))}) and this computer "
                                     "is offline. Connect to the internet once, or install them with pip_install.")
            return False
        if not slicer.util.confirmOkCancelDisplay(
                "SPECT Denoise will now download and install PyTorch, MONAI and a few other Python packages into "
                "Slicer's Python. This can take several minutes."):
            return False
        with slicer.util.tryWithErrorDisplay("Installing the packages failed.", waitCursor=True):
            if needTorch:
                try:
                    import PyTorchUtils
                except ImportError:
                    slicer.util.pip_install(f"torch{TORCH_REQUIREMENT}")
                else:
                    if PyTorchUtils.PyTorchUtilsLogic().installTorch(False, None, TORCH_REQUIREMENT) is None:
                        return False
            if missing:
                slicer.util.pip_install(missing)
            return True
        return False


def online(host: str = "pypi.org", timeout_s: float = 3.0) -> bool:
    """True when ``host`` answers on port 443 within ``timeout_s``."""
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


class SPECTDenoiseTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (``Slicer --testing``): denoise a small phantom with the default model, then the table."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_denoise_phantom_and_compare()

    def test_denoise_phantom_and_compare(self):
        import numpy as np

        z, y, x = np.indices((16, 48, 48))
        sphere = (z - 8) ** 2 + (y - 24) ** 2 + (x - 24) ** 2 <= 25
        body = (y - 24) ** 2 + (x - 24) ** 2 <= 400
        counts = np.random.default_rng(0).poisson(np.where(sphere, 40.0, np.where(body, 8.0, 0.0)))
        volume = slicer.util.addVolumeFromArray(counts.astype(np.float32), name="phantom")
        volume.SetSpacing(4.0, 4.0, 4.0)
        logic = SPECTDenoiseLogic()
        values = parameters.SPECTDenoiseParameters(inputVolume=volume, makeVariance=False, device="cpu")
        logic.runner.start(logic.request(values))
        logic.runner.wait(300)
        self.assertEqual(logic.runner.state, State.DONE, logic.runner.message)
        denoised = logic.runner.outputs["denoised"]
        self.assertEqual(denoised.GetName(), "phantom denoised")
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "sphere")
        roi.SetCenterWorld(96.0, 96.0, 32.0)  # voxel [8, 24, 24] at 4 mm spacing, identity IJK→RAS
        roi.SetSizeWorld(8.0, 8.0, 8.0)
        values.denoisedVolume, values.regionNode = denoised, roi
        table, _ = logic.compare(values)
        self.assertEqual(table.GetNumberOfRows(), 2)
        self.delayDisplay("SPECT Denoise test passed")
