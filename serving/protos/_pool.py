"""The descriptor pool of the vendored protos, apart from protobuf's default one (where TensorFlow
registers its own files of the same names): see generate.py."""
from google.protobuf import descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)  # ModelSpec.version is an Int64Value
