"""Declaring protobuf messages field by field (``descriptor_pb2``), without their generated modules.

TF Serving's config, SavedModel and warmup protos are read here without TensorFlow
or ``tensorflow-serving-api``: each module that needs some declares the subset
it reads, with the upstream field numbers, in its own :class:`DescriptorPool`
(so the names never clash with the real generated modules in protobuf's default pool).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, json_format

try:  # protobuf >= 4.21
    from google.protobuf.message_factory import GetMessageClass as class_of_descriptor
except ImportError:  # pragma: no cover - old protobuf
    from google.protobuf.message_factory import MessageFactory

    def class_of_descriptor(desc):
        return MessageFactory().GetPrototype(desc)


FIELD = descriptor_pb2.FieldDescriptorProto
REPEATED = FIELD.LABEL_REPEATED


def new_file(name: str, package: str, dependency=()) -> descriptor_pb2.FileDescriptorProto:
    """An empty proto3 file to declare messages in."""
    return descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3",
                                              dependency=list(dependency))


def add_field(msg, name, number, ftype, *, label=FIELD.LABEL_OPTIONAL, type_name=None, oneof=None):
    """Add field ``name`` = ``number`` of type ``ftype`` to the DescriptorProto ``msg``."""
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof
    return f


def add_message_field(msg, name, number, type_name, *, repeated=False, oneof=None):
    """A message-typed field (``type_name`` fully qualified, leading dot)."""
    return add_field(msg, name, number, FIELD.TYPE_MESSAGE, label=REPEATED if repeated else FIELD.LABEL_OPTIONAL,
                     type_name=type_name, oneof=oneof)


def add_map_field(msg, name, number, key_type, value_type, *, value_type_name=None, scope: str):
    """``map<key, value> name = number;``: the nested ``<Name>Entry`` message and the repeated field.

    ``scope`` is ``msg``'s fully qualified name (leading dot), where the entry message is nested.
    """
    entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
    entry = msg.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    add_field(entry, "key", 1, key_type)
    add_field(entry, "value", 2, value_type, type_name=value_type_name)
    return add_message_field(msg, name, number, f"{scope}.{entry_name}", repeated=True)


_WRAPPED = {"Int64Value": FIELD.TYPE_INT64, "StringValue": FIELD.TYPE_STRING, "BoolValue": FIELD.TYPE_BOOL}


def add_wrappers(name: str, *types: str) -> descriptor_pb2.FileDescriptorProto:
    """A file declaring google/protobuf/wrappers.proto's ``types`` (e.g. "Int64Value"), each ``value = 1``."""
    fd = new_file(name, "google.protobuf")
    for t in types:
        add_field(fd.message_type.add(name=t), "value", 1, _WRAPPED[t])
    return fd


def add_tensor_shape(fd) -> None:
    """tensorflow/core/framework/tensor_shape.proto's TensorShapeProto, in ``fd`` (package ``tensorflow``)."""
    shape = fd.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    add_field(dim, "size", 1, FIELD.TYPE_INT64)
    add_field(dim, "name", 2, FIELD.TYPE_STRING)
    add_message_field(shape, "dim", 2, ".tensorflow.TensorShapeProto.Dim", repeated=True)
    add_field(shape, "unknown_rank", 3, FIELD.TYPE_BOOL)


def build_pool(*files) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for f in files:
        pool.Add(f)
    return pool


def message_class(pool: descriptor_pool.DescriptorPool, full_name: str):
    """The message class of ``full_name`` (e.g. ``tensorflow.serving.MonitoringConfig``) in ``pool``."""
    return class_of_descriptor(pool.FindMessageTypeByName(full_name))


def message_to_dict(msg) -> dict:
    """JSON form with proto field names and default values printed (as TF Serving prints protos)."""
    try:
        return json_format.MessageToDict(
            msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    except TypeError:  # protobuf < 5.26
        return json_format.MessageToDict(
            msg, preserving_proto_field_name=True, including_default_value_fields=True
        )
