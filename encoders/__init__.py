"""Student encoders: conversations and documents -> term maps (PyTorch or ONNX Runtime).

>>> from convsparse.encoders import load_student          # doctest: +SKIP
>>> student = load_student(runtime="onnx")                 # doctest: +SKIP
>>> student.encode_conversation([{"role": "user", "text": "renew a passport"}]).top(3)  # doctest: +SKIP

Imports are lazy, so importing the package does not load torch or onnxruntime.
"""

from __future__ import annotations

from convsparse._lazy import lazy_exports

__all__ = [
    "ConversationFormatter",
    "FormattedConversation",
    "OnnxStudent",
    "SpladeModel",
    "SpladeStudent",
    "StudentEncoderBase",
    "base_student_dir",
    "export_onnx",
    "load_student",
]

_LAZY = {
    "load_student": "convsparse.encoders.loading",
    "SpladeStudent": "convsparse.encoders.student",
    "StudentEncoderBase": "convsparse.encoders.student",
    "OnnxStudent": "convsparse.encoders.onnx_runtime",
    "export_onnx": "convsparse.encoders.onnx_runtime",
    "ConversationFormatter": "convsparse.encoders.formatter",
    "FormattedConversation": "convsparse.encoders.formatter",
    "SpladeModel": "convsparse.encoders.pooling",
    "base_student_dir": "convsparse.encoders.base_student",
}


__getattr__, __dir__ = lazy_exports('convsparse.encoders', _LAZY, globals())
