"""Small clients for TF Serving's REST and gRPC Predict APIs, returning numpy arrays.

    client = RestClient("http://localhost:8501", "tf_bgadl")
    scores = client.predict(images, signature="bald")["bald"]     # images [N, H, W, C]

Images are float32 in [0, 1] (uint8 0-255 is converted); shapes and dtypes are checked before a
request is sent, and server errors (`{"error": ...}`, gRPC status) raise `ServingError`.

`bald_seeded` takes one int32 seed [2] per image (`seed` [N, 2], batch-major). The clients
accept either that, or one seed [a, b] for the whole call, which `per_row_seeds` expands: image i
of the call (0-based) gets `np.random.SeedSequence([a mod 2**32, b mod 2**32, i])
.generate_state(2)` as int32. An image's scores then depend only on (the image, a, b, i), not on
how the call's images are split into requests or merged by the server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np


class ServingError(RuntimeError):
    """The server answered with an error, or could not be reached."""


def prepare_images(images, image_shape=None) -> np.ndarray:
    """Checks and converts images to float32 [N, H, W, C] in [0, 1].

    Args:
      images: uint8 (0-255) or float (0-1) array-like of shape [N, H, W, C] (or [H, W, C] for
        one image).
      image_shape: the (H, W, C) the model expects, if known.

    Raises:
      ValueError: naming the bad shape, dtype or value range.
    """
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"images must have shape [N, H, W, C]; got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("images is empty")
    if image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape):
        raise ValueError(f"images have shape {tuple(array.shape[1:])} per image; the model "
                         f"expects {tuple(image_shape)}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0-255) or float (0-1); got dtype {array.dtype}")
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"float images must lie in [0, 1]; got values in "
                         f"[{np.nanmin(array)}, {np.nanmax(array)}]")
    return array.astype(np.float32)


def per_row_seeds(seed, num_rows: int, *, first_row: int = 0) -> np.ndarray:
    """The `seed` input of `bald_seeded` for `num_rows` images: int32 [num_rows, 2].

    Args:
      seed: int32 [2], one seed [a, b] for the call: row i gets `SeedSequence([a mod 2**32,
        b mod 2**32, first_row + i]).generate_state(2)` as int32 (see the module docstring);
        or int32 [num_rows, 2], one seed per row, returned as it is.
      num_rows: N, the number of images.
      first_row: index of the first row in the whole call, for callers that send a call's
        images in several requests (so a row's seed does not depend on the split).

    Raises:
      ValueError: naming the shape or values received and what is allowed.
    """
    array = np.asarray(seed)
    allowed = (f"seed must be int32 [2] (one seed for the request, expanded to one per image) "
               f"or [N, 2] = [{num_rows}, 2] (one per image)")
    if array.shape not in ((2,), (num_rows, 2)):
        raise ValueError(f"{allowed}; got shape {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{allowed}; got dtype {array.dtype} (values must be integers)")
    if array.size and (array.min() < -2**31 or array.max() >= 2**31):
        raise ValueError(f"{allowed}; got values in [{array.min()}, {array.max()}], outside "
                         "the int32 range")
    if array.ndim == 2:
        return array.astype(np.int32)
    a, b = (int(v) % 2**32 for v in array)
    rows = [np.random.SeedSequence([a, b, first_row + i]).generate_state(2, np.uint32)
            for i in range(num_rows)]
    return np.asarray(rows, np.uint32).reshape(num_rows, 2).view(np.int32)


def build_rest_request(images: np.ndarray, signature: str, *, seed=None,
                       row_format: bool = False) -> dict[str, Any]:
    """The JSON body of a `:predict` request (columnar `inputs`, or row `instances`).

    `seed` (int32 [2] or [N, 2], see `per_row_seeds`) becomes one seed per image: in the row
    format every instance is then `{"images": image, "seed": [s0, s1]}`.
    """
    seeds = None if seed is None else per_row_seeds(seed, len(images)).tolist()
    if row_format:
        if seeds is None:
            return {"signature_name": signature, "instances": images.tolist()}
        return {"signature_name": signature,
                "instances": [{"images": image, "seed": row_seed}
                              for image, row_seed in zip(images.tolist(), seeds)]}
    inputs: dict[str, Any] = {"images": images.tolist()}
    if seeds is not None:
        inputs["seed"] = seeds
    return {"signature_name": signature, "inputs": inputs}


def parse_rest_response(body: dict[str, Any]) -> dict[str, np.ndarray]:
    """`{"outputs": ...}` or `{"predictions": ...}` -> {name: array}; `{"error"}` raises."""
    if "error" in body:
        raise ServingError(f"TF Serving error: {body['error']}")
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict):  # a single unnamed output
            return {"output": np.asarray(outputs)}
        return {k: np.asarray(v) for k, v in outputs.items()}
    if "predictions" in body:
        rows = body["predictions"]
        if rows and isinstance(rows[0], dict):
            return {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
        return {"output": np.asarray(rows)}
    raise ServingError(f"unexpected TF Serving response: keys {sorted(body)}")


class RestClient:
    """TF Serving REST API: `POST /v1/models/<name>[/versions/<v>]:predict`, and metadata."""

    def __init__(self, server: str, model_name: str, *, version: int | None = None,
                 timeout: float = 60.0):
        self.server = server.rstrip("/")
        if "://" not in self.server:
            self.server = "http://" + self.server
        self.model_name = model_name
        self.version = version
        self.timeout = timeout

    def _url(self, suffix: str) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.server}/v1/models/{self.model_name}{version}{suffix}"

    def _request(self, url: str, body: dict | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            raise ServingError(f"TF Serving error (HTTP {e.code}) from {url}: {message}") from e
        except (urllib.error.URLError, OSError) as e:
            raise ServingError(f"cannot reach TF Serving at {url}: {e}") from e

    def metadata(self) -> dict[str, Any]:
        """The model's metadata (signature definitions)."""
        return self._request(self._url("/metadata"))

    def predict(self, images, signature: str = "serving_default", *, seed=None,
                row_format: bool = False, image_shape=None) -> dict[str, np.ndarray]:
        """Runs `signature` on images; returns its outputs as arrays.

        `seed` (for `bald_seeded`): int32 [2] for the call or [N, 2] per image
        (`per_row_seeds`); `row_format` sends REST `instances` instead of columnar `inputs`.
        """
        body = build_rest_request(prepare_images(images, image_shape), signature, seed=seed,
                                  row_format=row_format)
        return parse_rest_response(self._request(self._url(":predict"), body))


def build_grpc_request(images: np.ndarray, model_name: str, signature: str, *, seed=None,
                       version: int | None = None):
    """A `tensorflow.serving.PredictRequest` for float32 images [N, H, W, C].

    `seed` (int32 [2] or [N, 2], see `per_row_seeds`) becomes the `seed` input int32 [N, 2].
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.float32))
    if seed is not None:
        request.inputs["seed"].CopyFrom(tf.make_tensor_proto(
            per_row_seeds(seed, len(images)), dtype=tf.int32))
    return request


def parse_grpc_response(response) -> dict[str, np.ndarray]:
    """`PredictResponse` -> {output name: array}."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


class GrpcClient:
    """TF Serving gRPC PredictionService (default port 8500)."""

    def __init__(self, server: str, model_name: str, *, version: int | None = None,
                 timeout: float = 60.0):
        import grpc  # pylint: disable=import-outside-toplevel
        from tensorflow_serving.apis import (  # pylint: disable=import-outside-toplevel
            prediction_service_pb2_grpc)
        self._grpc = grpc
        target = server.split("://", 1)[-1]
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 256 << 20),
                             ("grpc.max_send_message_length", 256 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.version, self.timeout = model_name, version, timeout

    def predict(self, images, signature: str = "serving_default", *, seed=None,
                image_shape=None) -> dict[str, np.ndarray]:
        request = build_grpc_request(prepare_images(images, image_shape), self.model_name,
                                     signature, seed=seed, version=self.version)
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise ServingError(f"TF Serving gRPC error {e.code().name}: {e.details()}") from e
        return parse_grpc_response(response)

    def close(self) -> None:
        self.channel.close()
