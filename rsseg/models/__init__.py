"""UNetFormer (Wang et al., ISPRS JPRS 2022) with a timm encoder: factory and ONNX export."""

from rsseg.models.export import export_onnx
from rsseg.models.unetformer import UNetFormer, build_model

__all__ = ["UNetFormer", "build_model", "export_onnx"]
