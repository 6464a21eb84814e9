"""Faust codecs: UTF-8 string keys and orjson values.

Table keys are serialized as the bare UTF-8 string so that Kafka's default partitioner puts a
changelog entry on the same partition number as the input message with the same key.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs


class StrCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return obj.encode("utf-8") if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> str:
        return s.decode("utf-8")


class OrjsonCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def register() -> None:
    codecs.register("str", StrCodec())
    codecs.register("orjson", OrjsonCodec())
