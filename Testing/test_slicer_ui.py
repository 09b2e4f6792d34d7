"""The module's .ui loads with PySide6 offscreen and holds every widget and parameter the module uses."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtUiTools = pytest.importorskip("PySide6.QtUiTools")
QtCore = pytest.importorskip("PySide6.QtCore")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")

MODULE = Path(__file__).resolve().parents[1] / "SPECTDenoise"
sys.path.insert(0, str(MODULE))


@pytest.fixture(scope="module")
def panel():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    ui_file = QtCore.QFile(str(MODULE / "Resources" / "UI" / "SPECTDenoise.ui"))
    assert ui_file.open(QtCore.QIODevice.ReadOnly)
    widget = QtUiTools.QUiLoader().load(ui_file)
    ui_file.close()
    assert widget is not None
    yield widget
    widget.deleteLater()
    app.processEvents()


def _names(panel) -> set[str]:
    return {child.objectName() for child in panel.findChildren(QtCore.QObject)}


def test_every_widget_the_module_uses_exists_in_the_ui(panel):
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "SPECTDenoise.py").read_text(encoding="utf-8")))
    assert {"applyButton", "progressBar", "statusLabel", "comparisonTableView"} <= used
    assert used - _names(panel) == set()


def test_apply_starts_disabled_and_the_device_list_offers_auto_first(panel):
    assert not panel.findChild(QtWidgets.QPushButton, "applyButton").isEnabled()
    devices = panel.findChild(QtWidgets.QComboBox, "deviceComboBox")
    assert [devices.itemText(i) for i in range(devices.count())] == ["auto", "cpu", "cuda", "mps"]


def test_the_comparison_view_is_given_its_table_only_never_the_scene():
    """Slicer's qMRMLTableView with a scene but no table view node sets its table to none at the end of every batch
    process (qMRMLTableViewPrivate::endProcessing → updateWidgetFromViewNode): loading data would empty the panel's
    table. The node selectors still get the scene from the panel."""
    import xml.etree.ElementTree as ET

    tree = ET.parse(MODULE / "Resources" / "UI" / "SPECTDenoise.ui")
    given_the_scene = {c.findtext("receiver") for c in tree.iter("connection")
                       if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {w.get("name") for w in tree.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    assert "comparisonTableView" not in given_the_scene
    assert selectors and selectors <= given_the_scene
