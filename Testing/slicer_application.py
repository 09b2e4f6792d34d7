"""Run the module file ``SPECTDenoise.py`` without the Slicer application, on Slicer's own Python sources.

Real parts: slicer-core's MRML scene, nodes and ``slicer.util``; Slicer's ``parameterNodeWrapper``,
``ScriptedLoadableModule``, ``i18n`` and ``packaging`` from a Slicer source tree (``$SLICER_SOURCE_DIR``, default
``../shared/reference/slicer`` beside the repository). Stand-ins: the ``qt`` and ``ctk`` modules (widget classes
whose Qt properties are plain attributes, with signals that call their slots), ``slicer.app`` (layout manager,
translation, module manager) and the ``qMRML`` widget classes. Widgets are built from the ``.ui`` file by class
name, so the GUI connectors' exact-type rules run as in Slicer.

Use :func:`slicer_application` as a context manager: it yields the imported module file and restores ``sys.modules``
and the ``slicer`` package afterwards. Tests skip when the Slicer source tree or slicer-core is missing.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
MODULE_DIR = REPOSITORY / "SPECTDenoise"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SPECTDenoise.ui"
SLICER_SOURCE = Path(os.environ.get("SLICER_SOURCE_DIR") or REPOSITORY.parent / "shared" / "reference" / "slicer")
SLICER_PYTHON = SLICER_SOURCE / "Base" / "Python" / "slicer"
# Submodules of the real ``slicer`` package that slicer-core does not ship, loaded from the source tree.
SLICER_SUBMODULES = ("i18n", "parameterNodeWrapper", "ScriptedLoadableModule", "packaging")
QMRML_CLASSES = ("qMRMLNodeComboBox", "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget", "qMRMLWidget",
                 "qMRMLTableView", "qSlicerWidget")


def require_slicer_sources() -> Path:
    """The Slicer Python source folder, or skip the test."""
    pytest.importorskip("slicer")
    if not (SLICER_PYTHON / "parameterNodeWrapper" / "guiConnectors.py").is_file():
        pytest.skip(f"Slicer's Python sources are not at {SLICER_SOURCE} (set SLICER_SOURCE_DIR)")
    return SLICER_PYTHON


class Signal:
    """A Qt signal stand-in: ``connect`` keeps the slot, ``emit`` calls the slots."""

    def __init__(self) -> None:
        self.slots: list = []

    def connect(self, slot) -> None:
        self.slots.append(slot)

    def disconnect(self, slot=None) -> None:
        self.slots = [s for s in self.slots if slot is not None and s != slot]

    def emit(self, *args) -> None:
        """Call every slot with as many of ``args`` as it takes (as PythonQt does)."""
        for slot in list(self.slots):
            taken = len(args)
            while taken and not _binds(slot, args[:taken]):
                taken -= 1
            slot(*args[:taken])


def _binds(slot, args: tuple) -> bool:
    try:
        inspect.signature(slot).bind(*args)
    except TypeError:
        return False
    return True


SIGNALS = {"clicked", "toggled", "stateChanged", "valueChanged", "currentIndexChanged", "textChanged",
           "currentNodeChanged", "timeout", "currentPathChanged", "directoryChanged", "colorChanged", "valuesChanged"}


class Widget:
    """A Qt widget stand-in. Qt properties are attributes; ``property``/``setProperty`` hold dynamic properties
    (``SlicerParameterName``); a combo box keeps (text, data) items; a node selector keeps its current node."""

    def __init__(self, *args, **kwargs) -> None:
        self.__dict__.update(value=0, minimum=0, maximum=99, decimals=2, singleStep=1, checked=False,
                             checkable=False, checkBoxControlsButtonToggleState=False, text="", enabled=True,
                             visible=True, currentIndex=-1, nodeTypes=(), toolTip="", isEntered=True)
        self._dynamic: dict = {}
        self._items: list[tuple[str, object]] = []
        self._node = None
        self._blocked = False

    def __getattr__(self, name: str):
        if name in SIGNALS:
            signal = Signal()
            object.__setattr__(self, name, signal)
            return signal
        raise AttributeError(name)

    def property(self, name):  # noqa: A003 - Qt's name
        return self._dynamic.get(name)

    def setProperty(self, name, value) -> None:
        self._dynamic[name] = value

    def isWidgetType(self) -> bool:
        return False

    def connect(self, *args) -> None:
        """Old-style ``obj.connect("signal()", slot)``: nothing in these tests emits them."""

    # layouts and containers
    def layout(self):
        return self

    def addWidget(self, widget) -> None:
        pass

    def setLayout(self, layout) -> None:
        pass

    def show(self) -> None:
        pass

    def setMRMLScene(self, scene) -> None:
        pass

    def setMRMLTableNode(self, node) -> None:
        self.tableNode = node

    # combo boxes
    @builtins.property
    def count(self) -> int:
        return len(self._items)

    def addItem(self, text, data=None) -> None:
        self._items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def clear(self) -> None:
        self._items, self.currentIndex = [], -1

    def itemText(self, index: int) -> str:
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def itemData(self, index: int):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def findData(self, data) -> int:
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def setCurrentIndex(self, index: int) -> None:
        changed = index != self.currentIndex
        self.currentIndex = index
        if changed and not self._blocked:
            self.currentIndexChanged.emit(index)

    def blockSignals(self, block: bool) -> bool:
        previous, self._blocked = self._blocked, block
        return previous

    # spin boxes and sliders
    def setRange(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum

    def setMinimum(self, minimum) -> None:
        self.minimum = minimum

    def setMaximum(self, maximum) -> None:
        self.maximum = maximum

    # node selectors
    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        self._node = node

    # timers
    def setInterval(self, milliseconds) -> None:
        pass

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


class Settings:
    """``qt.QSettings`` stand-in: empty."""

    def contains(self, key) -> bool:
        return False

    def value(self, key, default=None):
        return default


class FileDialog:
    """``qt.QFileDialog`` stand-in: ``getSaveFileName`` answers :attr:`answer`."""

    answer = ""

    @staticmethod
    def getSaveFileName(*args) -> str:
        return FileDialog.answer


def _widget_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.QSettings, module.QFileDialog = Settings, FileDialog
    # slicer.util's message boxes read these before they log (and, in testing mode, return without a dialog)
    module.QMessageBox = type("QMessageBox", (Widget,), {"Ok": 0x400, "Cancel": 0x400000, "Yes": 0x4000,
                                                         "No": 0x10000, "Information": 1, "Warning": 2,
                                                         "Critical": 3, "Question": 4})
    module.Qt = types.SimpleNamespace(WaitCursor=0)
    classes: dict[str, type] = {}

    def widget_class(class_name: str) -> type:
        if class_name.startswith("__"):
            raise AttributeError(class_name)
        return classes.setdefault(class_name, type(class_name, (Widget,), {}))

    module.__getattr__ = widget_class
    return module


class Application:
    """``slicer.app`` stand-in: translation returns the text, the layout manager uses the scene's layout node."""

    applicationName = "Slicer"

    def __init__(self, scene) -> None:
        self.scene = scene
        self.layoutNode = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
        self.sliceViewResets = 0  # calls of the layout manager's resetSliceViews (fit every slice view)

    def translate(self, context, text):
        return text

    def testingEnabled(self) -> bool:
        return True  # slicer.packaging.pip_ensure then never installs anything

    def layoutManager(self):
        layout_node = self.layoutNode
        logic = types.SimpleNamespace(GetLayoutNode=lambda: layout_node)

        def reset_slice_views() -> None:
            self.sliceViewResets += 1

        return types.SimpleNamespace(layoutLogic=lambda: logic, resetSliceViews=reset_slice_views)

    def moduleManager(self):
        return Widget()

    def processEvents(self) -> None:
        pass

    def setOverrideCursor(self, cursor) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def connect(self, *args) -> None:
        pass


def _load(name: str, path: Path) -> types.ModuleType:
    package = path.is_dir()
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py" if package else path, submodule_search_locations=[str(path)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_ui(ui_file: Path = UI_FILE) -> types.SimpleNamespace:
    """The widgets of a ``.ui`` file by object name, as stand-in instances of their classes with the file's
    ``SlicerParameterName``, minimum, maximum and combo box items."""
    qt, ctk, slicer = sys.modules["qt"], sys.modules["ctk"], sys.modules["slicer"]
    ui = types.SimpleNamespace()
    for element in ET.parse(ui_file).iter("widget"):
        class_name = element.get("class")
        source = slicer if class_name.startswith("q") and not class_name.startswith("Q") else (
            ctk if class_name.startswith("ctk") else qt)
        widget = getattr(source, class_name)()
        for prop in element.findall("property"):
            value = prop[0] if len(prop) else None
            if value is None or value.text is None:
                continue
            if prop.get("name") == "SlicerParameterName":
                widget.setProperty("SlicerParameterName", value.text)
            elif prop.get("name") in ("minimum", "maximum", "decimals"):
                setattr(widget, prop.get("name"), float(value.text) if value.tag == "double" else int(value.text))
        for item in element.findall("item"):
            widget.addItem(item.find("property/string").text)
        setattr(ui, element.get("name"), widget)
    return ui


@contextlib.contextmanager
def slicer_application(scene) -> Iterator[types.ModuleType]:
    """Make ``scene`` Slicer's scene in a Slicer-like namespace and yield the imported ``SPECTDenoise`` module."""
    python = require_slicer_sources()
    import slicer
    import slicer.util

    def installed(name: str) -> bool:  # the modules this context puts in sys.modules
        return name in ("qt", "ctk", "SPECTDenoise") or any(
            name == f"slicer.{sub}" or name.startswith(f"slicer.{sub}.") for sub in SLICER_SUBMODULES)

    saved_modules = {name: module for name, module in sys.modules.items() if installed(name)}
    saved_attributes = {name: getattr(slicer, name) for name in
                        (*SLICER_SUBMODULES, *QMRML_CLASSES, "app", "mrmlScene", "dicomDatabase", "modules")
                        if hasattr(slicer, name)}
    saved_util = {name: getattr(slicer.util, name) for name in ("loadUI", "childWidgetVariables")}
    saved_path = list(sys.path)
    try:
        sys.modules["qt"], sys.modules["ctk"] = _widget_module("qt"), _widget_module("ctk")
        for class_name in QMRML_CLASSES:
            setattr(slicer, class_name, type(class_name, (Widget,), {}))
        slicer.mrmlScene, slicer.app, slicer.dicomDatabase = scene, Application(scene), None
        module_path = str(MODULE_DIR / "SPECTDenoise.py")  # slicer.util.modulePath reads it
        slicer.modules = types.SimpleNamespace(spectdenoise=types.SimpleNamespace(path=module_path))
        for name in SLICER_SUBMODULES:
            setattr(slicer, name, _load(f"slicer.{name}", python / (name if name == "parameterNodeWrapper"
                                                                     else f"{name}.py")))
        ui = build_ui()
        slicer.util.loadUI = lambda path: Widget()
        slicer.util.childWidgetVariables = lambda widget: ui
        sys.path[:0] = [str(MODULE_DIR)]
        sys.modules.pop("SPECTDenoise", None)
        yield importlib.import_module("SPECTDenoise")
    finally:
        sys.path[:] = saved_path
        for name in [name for name in sys.modules if installed(name)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        for name in (*SLICER_SUBMODULES, *QMRML_CLASSES, "app", "mrmlScene", "dicomDatabase", "modules"):
            if name in saved_attributes:
                setattr(slicer, name, saved_attributes[name])
            elif hasattr(slicer, name):
                delattr(slicer, name)
        for name, value in saved_util.items():
            setattr(slicer.util, name, value)
