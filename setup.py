"""cmp-deploy: deployment toolkit for Cross-Modal Perceptionist (voice -> 3D face mesh)."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

sim3dr = Extension(
    "Sim3DR._sim3dr",
    sources=["Sim3DR/_sim3dr.pyx", "Sim3DR/src/rasterize.cpp", "Sim3DR/src/lighting.cpp"],
    depends=[f"Sim3DR/src/{h}.h" for h in ("rasterize", "lighting", "parallel", "simd")],
    include_dirs=[numpy.get_include(), "Sim3DR/src"],
    language="c++",
    # No fused multiply-adds: the rasteriser must reproduce the release's float32 arithmetic.
    extra_compile_args=["-O3", "-std=c++17", "-pthread", "-ffp-contract=off"],
    extra_link_args=["-pthread"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

# OBJ text (runtime.mesh_io.write_obj): printf's %.9g / %.6g / %d, byte for byte, without the GIL.
meshtext = Extension(
    "runtime._meshtext",
    sources=["runtime/_meshtext.pyx", "runtime/src/meshtext.cpp"],
    include_dirs=[numpy.get_include(), "runtime/src"],
    language="c++",
    # No fused multiply-adds: the fast path's exactness argument is about single roundings.
    extra_compile_args=["-O3", "-std=c++17", "-pthread", "-ffp-contract=off"],
    extra_link_args=["-pthread"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    name="cmp-deploy",
    version="0.1.0",
    description="Export, serve and benchmark Cross-Modal Perceptionist (voice -> 3D face mesh)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["runtime", "runtime.*", "export", "calibration", "Sim3DR"]),
    package_data={"Sim3DR": ["*.pyx", "src/*.cpp", "src/*.h"], "runtime": ["*.pyx", "src/*.cpp", "src/*.h"]},
    ext_modules=cythonize([sim3dr, meshtext], language_level=3),
    # The runtime needs no torch: ONNX Runtime plus small audio libraries.
    install_requires=[
        "numpy>=1.24",
        "onnxruntime>=1.17",
        "soundfile>=0.12",
        "soxr>=0.3",
        # Same C detector as webrtcvad 2.0.10 (identical answers on all our recordings), as wheels.
        "webrtcvad-wheels>=2.0.14",
        # PNG and other image codecs (the design card's opencv-python, without GUI libraries).
        "opencv-python-headless>=4.8",
        # Progress bars for long work (building models, folders of inputs).
        "tqdm>=4.66",
        # Thread counts of numpy's BLAS in worker processes (predict --workers, the server).
        "threadpoolctl>=3.1",
    ],
    extras_require={
        "export": ["torch>=2.4", "onnx>=1.16", "onnxscript>=0.1", "scipy>=1.10"],
        # onnxruntime-gpu replaces onnxruntime: see README, "GPU".
        "gpu": ["onnxruntime-gpu>=1.20", "cuda-python>=12.6"],
        "bench": ["matplotlib>=3.7", "psutil>=5.9", "Cython>=3.0"],  # Cython: render_speed builds the baseline
        # Live capture for 'cmp-face predict --mic' (PortAudio comes with the wheel).
        "mic": ["sounddevice>=0.4.6"],
        # Figures ('cmp-face analyze'), not needed to predict.
        "plot": ["matplotlib>=3.7"],
        # Coverage-guided fuzzing of the readers (tests/fuzz/, not run in CI).
        "fuzz": ["atheris>=2.3"],
        # 'cmp-face calibrate' / 'accuracy' (FP16 and INT8 models; no torch needed).
        "calibrate": ["onnx>=1.16", "matplotlib>=3.7"],
        # 'cmp-face serve': the Open Inference Protocol server.
        "serve": ["starlette>=0.40", "uvicorn>=0.30", "prometheus-client>=0.20", "python-multipart>=0.0.18"],
        # Validating Triton model repositories offline, and the Triton/KServe client.
        "triton": ["tritonclient[http]>=2.40", "protobuf>=6.33.5"],
        # The tests drive the server with tritonclient (a client we did not write) and httpx.
        "test": ["pytest>=7", "hypothesis>=6.100", "scipy>=1.10", "onnx>=1.16", "matplotlib>=3.7", "psutil>=5.9",
                 "starlette>=0.40", "uvicorn>=0.30", "prometheus-client>=0.20", "python-multipart>=0.0.18",
                 "tritonclient[http]>=2.40", "protobuf>=6.33.5", "httpx>=0.27"],
    },
    entry_points={
        "console_scripts": ["cmp-face=runtime.cli:main"],
        # The layers above the runtime plug into it here, so that it never imports them
        # (runtime.plugins): cmp-face's commands, and the builder of the model cache's entries.
        "cmp_face.commands": [
            "export = export.to_onnx:COMMAND",
            "build-engines = export.to_trt:COMMAND",
            "calibrate = calibration.cli:CALIBRATE",
            "accuracy = calibration.cli:ACCURACY",
        ],
        "cmp_deploy.cache_builders": ["export = export.cache:build_entry"],
    },
)
