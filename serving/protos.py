"""TF Serving's gRPC protos (``tensorflow-serving-api``), imported without running TensorFlow.

``tensorflow_serving.apis.*_pb2`` import TensorFlow's generated proto modules
(``tensorflow/core/framework/tensor_pb2.py`` ...), and a plain import of those
runs ``tensorflow/__init__.py`` first, which loads all of TensorFlow (seconds,
hundreds of MiB). The generated files themselves need only protobuf. So this
module imports them with the ``tensorflow`` packages' ``__init__`` files
skipped (the packages are created empty, with their real search path), then
takes every ``tensorflow.*`` entry it added back out of ``sys.modules``: after
it, ``"tensorflow" not in sys.modules``, and a later real ``import tensorflow``
(e.g. a SavedModel-only version) starts from scratch and gets the same message
classes (the descriptors are already in protobuf's default pool).

When TensorFlow is already imported, the modules are imported plainly. Import
this module before any other thread may import TensorFlow (``nebula serve``
does so before it loads a version): while it runs, ``tensorflow`` packages
found by another thread would be the empty ones.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading

from google.protobuf import message_factory

_TF = "tensorflow"


class _EmptyPackageLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        pass  # no __init__.py: the package only provides its __path__


class _NoInitFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` packages as usual but loads them without running ``__init__.py``."""

    def find_spec(self, name, path, target=None):
        if name != _TF and not name.startswith(_TF + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.submodule_search_locations is None:
            return None  # a module (the *_pb2 files): the normal finders load it
        spec.loader = _EmptyPackageLoader()
        return spec


_LOCK = threading.Lock()


def _import_apis(names: list[str]) -> list:
    with _LOCK:
        if _TF in sys.modules:
            return [importlib.import_module(n) for n in names]
        before = set(sys.modules)
        finder = _NoInitFinder()
        sys.meta_path.insert(0, finder)
        try:
            return [importlib.import_module(n) for n in names]
        finally:
            sys.meta_path.remove(finder)
            for name in set(sys.modules) - before:
                if name == _TF or name.startswith(_TF + "."):
                    del sys.modules[name]


(
    predict_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    prediction_service_pb2_grpc,
    model_service_pb2_grpc,
) = _import_apis([
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.apis.model_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "tensorflow_serving.apis.model_service_pb2_grpc",
])

# tensorflow.TensorProto (tensorflow/core/framework/tensor.proto), reached through the API module
TensorProto = message_factory.GetMessageClass(
    predict_pb2.PredictRequest.DESCRIPTOR.fields_by_name["inputs"].message_type.fields_by_name["value"].message_type
)
