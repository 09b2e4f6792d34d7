"""SPECT Denoise: deep-learning denoising of low-count SPECT in 3D Slicer.

The widget binds the panel to the logic. MRML work lives in the Qt-free ``SPECTDenoiseLogic`` package (tested with
slicer-core); models run in a background worker process (``SPECTDenoiseLib.worker``), teaching series are simulated
by background ``SPECTDenoiseLib simulate`` processes and Hub models are downloaded by a background process, all
through one runner, so no model runs in Slicer's own process and Slicer stays responsive; Cancel kills the running
process tree. Written against Slicer's own sources (see docs/SLICER.md for the supported versions).
"""

import importlib
import shutil
import sys
from pathlib import Path
from typing import Annotated, Union

import qt
import vtk

import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# A source checkout: the module folder is <clone>/SPECTDenoise and the core <clone>/SPECTDenoiseLib (installed
# extensions keep SPECTDenoiseLib beside this file, which is already on the path).
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "SPECTDenoiseLib" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))

from SPECTDenoiseLib import hub  # noqa: E402
from SPECTDenoiseLib.errors import SPECTDenoiseError  # noqa: E402
from SPECTDenoiseLib.models.config import VARIANCE_MEANING  # noqa: E402
from SPECTDenoiseLogic import comparison, dependencies, models, teaching  # noqa: E402
from SPECTDenoiseLogic.denoising import DenoiseRequest, ModelOptions  # noqa: E402
from SPECTDenoiseLogic.outputs import VARIANCE_WINDOW_PERCENTILE  # noqa: E402
from SPECTDenoiseLogic.runner import BackgroundRunner, Job, RunEvent, State  # noqa: E402

DEVICES = ["auto", "cpu", "cuda", "mps"]
SAMPLE_CATEGORY = "SPECT Denoise"
# Shipped sample study (Resources/Samples): node name → (file, SHA256, Slicer file type).
SAMPLE_FILES = {
    "IEC low-count 10%": ("iec_low10.nrrd", "436f9517c3091d45f3bd93e4467c2f6ec6d985e34ea56a02e8ea830337612b54",
                          "VolumeFile"),
    "IEC full-count": ("iec_full.nrrd", "7ecbc95020f9bbd74c6ad90cda07f508745319e8bb4f5d3aab79d5471b2c54e5",
                       "VolumeFile"),
    "IEC CT": ("iec_ct.nrrd", "7b881124564ca1409eac357a1aad0caaec89d244c10284bc42da2cd5c16c3162", "VolumeFile"),
    "IEC regions": ("iec_labels.nrrd", "68d23f3226de009a58640c8d15440836901d22baa4769cf4f4ec9f707ce25623",
                    "SegmentationFile"),
}


class SPECTDenoise(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SPECT Denoise")
        # Category names are translated in the context Slicer's module panel uses for them.
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Nuclear Medicine")]
        self.parent.dependencies = []
        self.parent.contributors = ["SPECTDenoise maintainers (SPECTDenoise project)"]
        self.parent.helpText = _(
            "Denoise low-count SPECT with deep learning (U-Net, U²-Net with CT, predict-and-refine diffusion with a "
            "per-voxel variance). Choose the low-count volume, a model and Apply; the run happens in the background "
            "and can be cancelled. Outputs: <i>denoised</i>, <i>difference</i> (denoised − input) and, for "
            "diffusion models, <i>variance</i>, shown as a heat map of the variance itself (image units squared, "
            "not σ) from 0 to its {percentile:g}th percentile; in the slice views the difference and the "
            "variance carry a colour legend (title and values in their units). {variance} The model card line "
            "under the model list gives the selected model's measured coverage. "
            "The <i>uptake guard</i> (Advanced) keeps the input's values where denoising removed or added a "
            "lesion far beyond the noise, and the input's counts over organ-sized regions. Compare regions "
            "(markups ROI or segmentation) in a table with SUVmean/max/peak, and create low-count teaching series. "
            "Denoised images are for research and teaching; check them against the original. Sample data: Sample "
            "Data module, 'SPECT Denoise'. "
            "See <a href='https://github.com/spectdenoise/SPECTDenoise'>the documentation</a>."
        ).format(variance=VARIANCE_MEANING, percentile=VARIANCE_WINDOW_PERCENTILE)
        self.parent.acknowledgementText = _(
            "Builds on 3D Slicer, MONAI, PyTorch, SimpleITK and huggingface_hub. Methods follow published work on "
            "U-Net, U²-Net and diffusion denoising of low-count SPECT (see the README's references).")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the shipped IEC phantom study (10 % and full counts, CT, regions) with the Sample Data module."""
    import SampleData

    samples = hub.RESOURCES / "Samples"
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName="SPECT IEC phantom",
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "SPECTDenoiseSample.png"),
        uris=[(samples / file).as_uri() for file, _digest, _kind in SAMPLE_FILES.values()],
        fileNames=[file for file, _digest, _kind in SAMPLE_FILES.values()],
        nodeNames=list(SAMPLE_FILES),
        checksums=[f"SHA256:{digest}" for _file, digest, _kind in SAMPLE_FILES.values()],
        loadFileTypes=[kind for _file, _digest, kind in SAMPLE_FILES.values()],
    )


@parameterNodeWrapper
class SPECTDenoiseParameterNode:
    """The panel's choices, saved with the scene; each field is bound to the .ui widget with its SlicerParameterName
    (``model`` is set from the model list). 0 means "the model's default" (samples, steps) or "from DICOM" (SUV)."""

    inputVolume: vtkMRMLScalarVolumeNode
    ctVolume: vtkMRMLScalarVolumeNode
    referenceVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    device: Annotated[str, Choice(DEVICES)] = "auto"
    samples: Annotated[int, WithinRange(0, 200)] = 0
    steps: Annotated[int, WithinRange(0, 1000)] = 0
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    uptakeGuard: bool = True
    makeDifference: bool = True
    makeVariance: bool = True
    denoisedVolume: vtkMRMLScalarVolumeNode
    differenceVolume: vtkMRMLScalarVolumeNode
    varianceVolume: vtkMRMLScalarVolumeNode
    # typing.Union with None: the GUI connectors of Slicer before 5.10 do not accept "A | B | None" here.
    regionNode: Union[vtkMRMLMarkupsROINode, vtkMRMLSegmentationNode, None]  # noqa: UP007
    comparisonTable: vtkMRMLTableNode
    weightKg: Annotated[float, WithinRange(0.0, 500.0)] = 0.0
    doseMBq: Annotated[float, WithinRange(0.0, 100000.0)] = 0.0
    calibration: Annotated[float, WithinRange(0.0, 1e9)] = 0.0
    teachingFractions: str = "0.5, 0.25, 0.1"
    teachingDenoise: bool = False


class SPECTDenoiseLogic(ScriptedLoadableModuleLogic):
    """Turns the panel's parameters into runner jobs and comparison tables; the work itself is Qt-free."""

    def __init__(self, python: str | None = None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.python = python or shutil.which("PythonSlicer") or sys.executable
        self.runner = BackgroundRunner(slicer.mrmlScene, self.python)
        self.rows: list[comparison.ComparisonRow] = []

    def getParameterNode(self) -> SPECTDenoiseParameterNode:
        return SPECTDenoiseParameterNode(super().getParameterNode())

    @staticmethod
    def modelOptions(parameters: SPECTDenoiseParameterNode) -> ModelOptions:
        """The model, device and sampling options set in the panel (0 and "" mean the defaults)."""
        return ModelOptions(parameters.model or None, parameters.device, parameters.samples or None,
                            parameters.steps or None, parameters.seed, parameters.uptakeGuard)

    def denoiseRequest(self, parameters: SPECTDenoiseParameterNode) -> DenoiseRequest:
        """The denoising job for the panel (outputs created when their selector is empty; a variance only from a
        model that gives one — the default box is ticked, the default model is deterministic). Raises InputError
        when an output selector holds an input or another output's volume."""
        outputs = {"denoised": parameters.denoisedVolume}
        if parameters.makeDifference:
            outputs["difference"] = parameters.differenceVolume
        if parameters.makeVariance and models.gives_variance(parameters.model) is not False:
            outputs["variance"] = parameters.varianceVolume
        options = self.modelOptions(parameters)
        return DenoiseRequest(parameters.inputVolume, parameters.ctVolume, options.model, options.device, outputs,
                              options.samples, options.steps, options.seed, options.uptake_guard)

    def lowCountRequest(self, parameters: SPECTDenoiseParameterNode) -> teaching.LowCountRequest:
        """The teaching job: simulate each fraction, then (if asked) denoise each (raises InputError for
        unreadable fractions)."""
        fractions = teaching.parse_fractions(parameters.teachingFractions)
        return teaching.LowCountRequest(parameters.inputVolume, fractions, parameters.ctVolume, parameters.seed,
                                        self.modelOptions(parameters) if parameters.teachingDenoise else None)

    def compare(self, parameters: SPECTDenoiseParameterNode) -> tuple[vtkMRMLTableNode, str]:
        """Fill the comparison table; return it and a note on SUV (empty when SUV is known)."""
        volumes = {"low-count": parameters.inputVolume}
        if parameters.denoisedVolume is not None:
            volumes["denoised"] = parameters.denoisedVolume
        if parameters.referenceVolume is not None:
            volumes["reference"] = parameters.referenceVolume
        scale, note = comparison.suv_scale(dicomTags(parameters.inputVolume), parameters.weightKg,
                                           parameters.doseMBq, parameters.calibration)
        self.rows = comparison.compare_volume_nodes(volumes, parameters.regionNode, scale,
                                                    "reference" if "reference" in volumes else None)
        table = parameters.comparisonTable or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode",
                                                                                 "SPECT ROI comparison")
        return comparison.fill_table(table, self.rows), note


def dicomTags(volume: vtkMRMLScalarVolumeNode) -> dict | None:
    """DICOM tags of the series ``volume`` was loaded from (None when it did not come from the DICOM database, or
    its file is no longer there: a saved scene keeps the attribute, and ctkDICOMDatabase.fileForInstance answers
    "" for an instance the database lacks)."""
    uids = (volume.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)  # set by the DICOM module (DICOM.py, initializeDICOMDatabase)
    path = database.fileForInstance(uids[0]) if uids and database is not None else ""
    if not path or not Path(path).is_file():
        return None
    from SPECTDenoiseLib.dicom import read_dicom_tags

    return read_dicom_tags(path)


def slicerPackaging():
    """``slicer.packaging`` (Slicer ≥ 5.12, with ``pip_ensure``), or None on older Slicer."""
    try:
        return importlib.import_module("slicer.packaging")
    except ImportError:
        return None


class SPECTDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel to :class:`SPECTDenoiseLogic` (injectable for tests)."""

    def __init__(self, parent=None, logic: SPECTDenoiseLogic | None = None):
        self.logic = logic
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models: list[models.ModelChoice] = []
        # Last: it initialises VTKObservationMixin (next in the MRO) and, without a parent, runs setup() itself.
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SPECTDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or SPECTDenoiseLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onTimer)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.downloadButton.clicked.connect(self.onDownload)
        self.ui.compareButton.clicked.connect(self.onCompare)
        self.ui.exportCsvButton.clicked.connect(self.onExportCsv)
        self.ui.teachingButton.clicked.connect(self.onTeaching)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelSelected)
        self.ui.varianceCheckBox.toolTip = VARIANCE_MEANING
        self.ui.varianceVolumeSelector.toolTip = VARIANCE_MEANING
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.fillModels()

    def cleanup(self):
        self.logic.runner.cancel()
        self.logic.runner.wait(self.logic.runner.grace_s + 1)
        self.timer.stop()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        """Another module is shown: stop updating the panel (runs go on; their results still reach the scene)."""
        self.disconnectParameterNode()

    def disconnectParameterNode(self):
        """Unbind the panel from its parameter node (kept, so that a later enter() binds it again)."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event):
        """The scene is closing: stop any run (nothing is imported), let go of the parameter node and of the
        comparison (the table view has no scene of its own: with one but no table view node, Slicer's qMRMLTableView
        empties itself after every batch process, such as loading data)."""
        self.showEvents(self.logic.runner.cancel())
        self.ui.comparisonTableView.setMRMLTableNode(None)
        self.logic.rows = []
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode: SPECTDenoiseParameterNode | None):
        self.disconnectParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self.updateGui()

    def updateGui(self, caller=None, event=None):
        """Show the parameter node's model in the model list and set the buttons for the runner's state."""
        parameters, state = self._parameterNode, self.logic.runner.state
        if parameters is not None and self._models:
            self.selectModel(parameters.model)
        hasInput = parameters is not None and parameters.inputVolume is not None
        self.ui.applyButton.text = "Cancel" if state.busy else "Apply"
        self.ui.applyButton.enabled = state is not State.CANCELLING and (hasInput or state.busy)
        self.ui.teachingButton.text = "Cancel" if state.busy else "Create low-count series"
        self.ui.teachingButton.enabled = state is not State.CANCELLING and (hasInput or state.busy)
        self.ui.downloadButton.enabled = not state.busy
        self.ui.compareButton.enabled = hasInput and parameters.regionNode is not None
        self.ui.exportCsvButton.enabled = bool(self.logic.rows)
        self.ui.progressBar.visible = state.busy

    def fillModels(self):
        """Fill the model list from local files (no network, no hashing) and select the parameter node's model."""
        try:
            self._models = models.model_choices()
        except SPECTDenoiseError as error:
            self._models = []
            self.ui.modelSummaryLabel.text = str(error)
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for choice in self._models:
            self.ui.modelComboBox.addItem(choice.label, choice.id)
        self.ui.modelComboBox.blockSignals(wasBlocked)
        self.updateGui()

    def selectModel(self, modelId: str):
        """Show ``modelId`` ("" = the default model, the first entry) and its model card line."""
        index = max(self.ui.modelComboBox.findData(modelId), 0) if modelId else 0
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.setCurrentIndex(index)
        self.ui.modelComboBox.blockSignals(wasBlocked)
        shown = self.ui.modelComboBox.itemData(index)
        self.ui.modelSummaryLabel.text = models.describe(self._models, modelId or shown) if shown else ""

    def onModelSelected(self, index: int):
        modelId = self.ui.modelComboBox.itemData(index)
        if self._parameterNode is not None and modelId is not None:
            self._parameterNode.model = modelId

    def onApply(self):
        self.startOrCancel(self.logic.denoiseRequest)

    def onTeaching(self):
        self.startOrCancel(self.logic.lowCountRequest)

    def startOrCancel(self, makeJob):
        """Cancel the running job; or make the job from the panel's parameters (a problem the user can fix is one
        sentence on the status line) and start it once the Python packages it needs are there."""
        if self.logic.runner.state.busy:
            self.showEvents(self.logic.runner.cancel())
            return
        try:
            job = makeJob(self._parameterNode)
        except SPECTDenoiseError as error:
            self.ui.statusLabel.text = str(error)
            return
        if self.ensureDependencies():
            self.start(job)

    def onDownload(self):
        try:
            modelId = models.hub_model_id(self.ui.hubRepoLineEdit.text, self.ui.hubRevisionLineEdit.text)
        except SPECTDenoiseError as error:
            self.ui.statusLabel.text = str(error)
            return
        self.start(models.ModelDownload(modelId))

    def start(self, job: Job):
        self.showEvents(self.logic.runner.start(job))
        self.timer.start()

    def onTimer(self):
        self.showEvents(self.logic.runner.poll())
        if not self.logic.runner.state.busy:
            self.timer.stop()

    def showEvents(self, events: list[RunEvent]):
        for event in events:
            if event.fraction is not None:
                self.ui.progressBar.value = int(100 * event.fraction)
            self.ui.statusLabel.text = event.message
            if event.state is State.DONE:
                self.showOutputs()
        self.updateGui()

    def showOutputs(self):
        """Show what the finished job made: outputs in the standard views, a teaching layout, or the new model."""
        job, outputs = self.logic.runner.job, self.logic.runner.outputs
        parameters = self.logic.getParameterNode()
        if isinstance(job, models.ModelDownload):
            self.fillModels()
            parameters.model = job.model_id
        elif isinstance(job, teaching.LowCountRequest):
            rows = job.view_rows(outputs)
            layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
            teaching.use_side_by_side_layout(layoutNode, len(rows), len(rows[0]))
            slicer.app.processEvents()  # the layout manager creates the views
            teaching.show_side_by_side(slicer.mrmlScene, [volume for row in rows for volume in row])
            slicer.util.resetSliceViews()  # the new views start at the origin: fit each to its volume
        else:
            parameters.denoisedVolume = outputs["denoised"]
            if "difference" in outputs:
                parameters.differenceVolume = outputs["difference"]
            if "variance" in outputs:
                parameters.varianceVolume = outputs["variance"]
            teaching.show_in_standard_views(slicer.mrmlScene, outputs["denoised"])

    def onCompare(self):
        """Fill the table; a problem the user can fix (no overlap, other grid) is one sentence on the status line,
        anything else an error dialog (``tryWithErrorDisplay`` shows it, then re-raises)."""
        with slicer.util.tryWithErrorDisplay("Could not compute the comparison table.", waitCursor=True):
            try:
                table, note = self.logic.compare(self._parameterNode)
            except SPECTDenoiseError as error:
                self.ui.statusLabel.text = str(error)
                return
            self._parameterNode.comparisonTable = table
            self.ui.comparisonTableView.setMRMLTableNode(table)
            self.ui.statusLabel.text = f"SUV columns are empty: {note}" if note else "Comparison table updated."
            self.updateGui()

    def onExportCsv(self):
        path = qt.QFileDialog.getSaveFileName(self.parent, "Export comparison", "rois.csv", "CSV (*.csv)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Could not write the CSV file."):
            try:
                comparison.write_csv(self.logic.rows, path)
            except SPECTDenoiseError as error:
                self.ui.statusLabel.text = str(error)
                return
            self.ui.statusLabel.text = f"Saved {path}."

    def ensureDependencies(self) -> bool:
        """Make sure Slicer's Python has the versions the worker needs (Resources/requirements.txt), installing them
        after the user agrees: torch through the PyTorch extension only (pip would replace its build for the GPU
        driver), the rest with ``slicer.packaging.pip_ensure`` (Slicer ≥ 5.12) or pip after a version check. A failed
        installation is one error sentence naming what is missing. Returns False when they are not all there."""
        requirements = dependencies.read_requirements(self.resourcePath("requirements.txt"))
        torch, others = dependencies.split_torch(requirements)
        packaging = slicerPackaging()
        try:
            if torch is not None and not dependencies.is_met(torch) and not self.installPyTorch(torch):
                return False
            if packaging is not None:
                try:
                    packaging.pip_ensure(others, requester="SPECT Denoise")
                except RuntimeError:  # the user declined
                    return False
            else:
                missing = dependencies.unmet(others)
                names = ", ".join(map(str, missing))
                if missing and not slicer.util.confirmOkCancelDisplay(
                        f"SPECT Denoise needs these Python packages in Slicer's Python: {names}. Install them now? "
                        "This needs the internet and can take several minutes."):
                    return False
                if missing:
                    slicer.util.pip_install([str(requirement) for requirement in missing])
        except Exception as error:  # noqa: BLE001 - pip failed (offline, no disk space): say which packages
            names = ", ".join(map(str, dependencies.unmet(requirements)))
            slicer.util.errorDisplay(f"Installing the Python packages failed ({error}). Still missing: {names}.")
            return False
        missing = dependencies.unmet(requirements)
        if missing:
            names = ", ".join(map(str, missing))
            slicer.util.errorDisplay(f"SPECT Denoise cannot run without these Python packages: {names}.")
        return not missing

    def installPyTorch(self, requirement) -> bool:
        """Install torch through the PyTorch extension (the build that matches the GPU driver); False if not."""
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("SPECT Denoise installs PyTorch through the PyTorch extension: install "
                                     "'PyTorch' in the Extension Manager and restart Slicer.")
            return False
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                             torchVersionRequirement=str(requirement.specifier))
        return torch is not None


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
        parameters = logic.getParameterNode()
        parameters.inputVolume, parameters.makeVariance, parameters.device = volume, False, "cpu"
        logic.runner.start(logic.denoiseRequest(parameters))
        logic.runner.wait(300)
        self.assertEqual(logic.runner.state, State.DONE, logic.runner.message)
        denoised = logic.runner.outputs["denoised"]
        self.assertEqual(denoised.GetName(), "phantom denoised")
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "sphere")
        roi.SetCenterWorld(96.0, 96.0, 32.0)  # voxel [8, 24, 24] at 4 mm spacing, identity IJK→RAS
        roi.SetSizeWorld(8.0, 8.0, 8.0)
        parameters.denoisedVolume, parameters.regionNode = denoised, roi
        table, _note = logic.compare(parameters)
        self.assertEqual(table.GetNumberOfRows(), 2)
        self.delayDisplay("SPECT Denoise test passed")
