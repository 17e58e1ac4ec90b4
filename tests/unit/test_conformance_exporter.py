"""Every built-in exporter passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations



from framework.testing import ExporterContract
from plugins.export_onnx import OnnxExporter


class TestOnnxExporterContract(ExporterContract):
    exporter_cls = OnnxExporter

    def invalid_config(self):
        return OnnxExporter.Config(opset=3)

