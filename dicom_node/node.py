"""The C-STORE SCP: every fundus photo received is decoded (`preprocessing.dicom`), segmented in process by the
served version, and its SEG object (and, into a folder, its FHIR Observation) delivered before the store is
answered, so the PACS's status tells the truth:

| status | when |
| --- | --- |
| 0x0000 success | the SEG was delivered (forwarded with C-STORE, or written) |
| 0xA900 data set does not match SOP class | the data set's SOP class is not the presentation context's |
| 0xC000 cannot understand | not a fundus photo this node reads (the ErrorComment says why: multi-frame, no pixel data, ...) |
| 0xA700 out of resources | no model version loaded yet, or the destination refused or could not be reached: send again later |
| 0xC001 processing failure | anything else (logged with a trace) |

Only fundus photo SOP classes are accepted at association (Ophthalmic Photography 8/16 bit, VL Photographic),
in every transfer syntax the decoder reads; anything else (an encapsulated PDF, a CT) is refused at negotiation.
Logs name the SOP Instance UID and the result, never a patient attribute (pynetdicom's own logger is kept at
WARNING, where it logs no data set).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from preprocessing.decode import DecodeLimits
from preprocessing.dicom import FUNDUS_SOP_CLASSES, DicomDecodeError, MultiFrameError, decode_dataset
from serving.hospital.fhir import build_observation, observation_json
from serving.hospital.seg import Algorithm, build_segmentation

log = logging.getLogger("dicom_node")

SUCCESS, OUT_OF_RESOURCES, NOT_MATCHING, CANNOT_UNDERSTAND, FAILURE = 0x0000, 0xA700, 0xA900, 0xC000, 0xC001
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
]
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True)
class Destination:
    """Where SEG objects go: another node's C-STORE SCP."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Destination:
        host, _, rest = text.rpartition(":")
        host, _, port = host.rpartition(":")
        if not (host and port.isdigit() and rest and len(rest) <= 16):
            raise ValueError(f"--forward wants HOST:PORT:AET (an AE title of at most 16 characters), got {text!r}")
        return cls(host, int(port), rest)


class Delivery:
    """Sends a SEG to the destination and/or writes it (and the Observation JSON) to a folder."""

    def __init__(self, ae_title: str, forward: Destination | None, out_dir: Path | None, timeout_s: float = 30.0):
        if forward is None and out_dir is None:
            raise ValueError("give a destination (--forward HOST:PORT:AET) or a folder (--out DIR), or both")
        self.ae_title, self.forward, self.out_dir, self.timeout_s = ae_title, forward, out_dir, timeout_s

    def deliver(self, seg, observation_text: str) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            uid = str(seg.SOPInstanceUID)  # UIDs have dots: names are built, not suffixed
            tmp = self.out_dir / f".{uid}.tmp"
            tmp.write_text(observation_text)
            tmp.replace(self.out_dir / f"{uid}.observation.json")
            seg.save_as(tmp, enforce_file_format=True)
            tmp.replace(self.out_dir / f"{uid}.dcm")  # a reader of the folder never sees half a file
        if self.forward is not None:
            self._send(seg)

    def _send(self, seg) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.add_requested_context(SEG_STORAGE, "1.2.840.10008.1.2.1")
        association = ae.associate(self.forward.host, self.forward.port, ae_title=self.forward.ae_title)
        if not association.is_established:
            raise ConnectionError(f"{self.forward.ae_title}@{self.forward.host}:{self.forward.port} refused or "
                                  "did not answer the association")
        try:
            status = association.send_c_store(seg)
        finally:
            association.release()
        if status is None or int(getattr(status, "Status", 0xFFFF)) not in (0x0000, 0xB000, 0xB007, 0xB006):
            code = "no answer" if status is None or "Status" not in status else f"0x{int(status.Status):04X}"
            raise ConnectionError(f"{self.forward.ae_title} answered the SEG's C-STORE with {code}")


class FundusNode:
    """The SCP's handler, holding the model watcher and the delivery; `handle_store` is pynetdicom's EVT_C_STORE."""

    def __init__(self, watcher, delivery: Delivery, limits: DecodeLimits = DecodeLimits(), frame: int | None = None):
        self.watcher, self.delivery, self.limits, self.frame = watcher, delivery, limits, frame
        self._lock = threading.Lock()  # one image at a time through the model: TF is not the bottleneck's answer

    def handle_store(self, event):
        from pydicom.dataset import Dataset

        def status(code: int, comment: str | None = None):
            answer = Dataset()
            answer.Status = code
            if comment:
                answer.ErrorComment = comment[:64]
            return answer

        started = time.perf_counter()
        size = _encoded_size(event)
        if size > self.limits.max_bytes:
            return status(CANNOT_UNDERSTAND, f"data set of {size} bytes, over the limit of {self.limits.max_bytes}")
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as exc:
            log.warning("store: unreadable data set (%s)", exc.__class__.__name__)
            return status(CANNOT_UNDERSTAND, "unreadable data set")
        uid = str(ds.get("SOPInstanceUID", "?"))
        if str(ds.get("SOPClassUID", "")) != str(event.context.abstract_syntax):
            return status(NOT_MATCHING, "SOP Class UID differs from the presentation context")
        served = self.watcher.served
        if served is None:
            log.warning("store %s: no model version loaded yet", uid)
            return status(OUT_OF_RESOURCES, "no model version loaded yet")
        try:
            image = decode_dataset(ds, self.limits, self.frame if _frames(ds) > 1 else None)
        except MultiFrameError as exc:
            log.info("store %s: refused: %s", uid, exc)
            return status(CANNOT_UNDERSTAND, "multi-frame image: the node is set to refuse it")
        except DicomDecodeError as exc:
            log.info("store %s: refused: %s", uid, exc)
            return status(CANNOT_UNDERSTAND, str(exc))
        try:
            with self._lock:
                answer = served.answer(image.rgb, image.laterality)
            algorithm = Algorithm(self.watcher.model_name, served.number)
            seg = build_segmentation(image, answer.disc, answer.cup if served.two_stage else None, algorithm)
            reason = "no optic disc was found" if served.two_stage else "this model version segments no cup"
            observation = build_observation(answer.measurements, algorithm, source=image.source,
                                            laterality=image.laterality,
                                            patient_id=str(image.dataset.get("PatientID", "")) or None,
                                            seg_sop_instance_uid=str(seg.SOPInstanceUID), absent_reason=reason)
        except Exception:
            log.exception("store %s: segmentation failed", uid)
            return status(FAILURE, "segmentation failed")
        try:
            self.delivery.deliver(seg, observation_json(observation))
        except (OSError, ConnectionError, RuntimeError) as exc:
            log.warning("store %s: SEG not delivered: %s", uid, exc)
            return status(OUT_OF_RESOURCES, "SEG not delivered; send again later")
        vcdr = answer.measurements.vcdr if answer.measurements is not None else None
        log.info("store %s: SEG %s by version %d (vCDR %s, %.0f ms)", uid, seg.SOPInstanceUID, served.number, vcdr,
                 1000 * (time.perf_counter() - started))
        return status(SUCCESS)


def _encoded_size(event) -> int:
    try:
        return len(event.request.DataSet.getbuffer())
    except Exception:
        return 0


def _frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def serve(node: FundusNode, host: str, port: int, ae_title: str, block: bool = True):
    """Start the SCP (and return the server when `block` is False)."""
    from pynetdicom import AE, evt

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    ae = AE(ae_title=ae_title)
    for sop_class in FUNDUS_SOP_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = 0  # no limit of ours: DecodeLimits bound what is decoded
    handlers = [(evt.EVT_C_STORE, node.handle_store)]
    if block:
        ae.start_server((host, port), block=True, evt_handlers=handlers)
        return None
    return ae.start_server((host, port), block=False, evt_handlers=handlers)
