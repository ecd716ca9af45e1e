"""Reduced precision for the ONNX graphs: FP16 with FP32 islands (``fp16``), INT8 with explicit
Q/DQ from calibration on real speech (``int8``, ``stats``), and the accuracy report (``report``).
Imports no torch: it runs on machines that only have ONNX Runtime. See NOTES.md."""
