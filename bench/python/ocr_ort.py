"""The OCR pipeline (PP-OCRv6 det -> crop -> rec -> CTC) driven by hand from Python: onnxruntime + numpy + Pillow.

The benchmark's baseline for the `ocr` pipeline. Its logic is the Rust processors' (plugins/ocr-det-pre,
plugins/ocr-crop) step for step, with the same thresholds and resize rules, so both read the same text:
  decode (Pillow) -> RGB, alpha over white -> longer side at most --max-side-len, each side a multiple of 32
  -> bilinear resize, BGR planes, (x/255 - 0.5) / 0.5 -> det -> prob > --thresh, 2x2 dilation
  -> 8-connected regions -> axis-aligned boxes, mean probability >= --box-thresh -> unclip (--unclip-ratio)
  -> original pixels -> crop -> height 48, one batch padded to the widest -> rec -> greedy CTC with the charset
  from the rec model's `character` metadata -> lines whose mean confidence is at least --text-score.

Usage: ocr_ort.py --det DET.onnx --rec REC.onnx --image PNG [--repeat N]
Prints {"lines": [{"text", "score", "box": [x0, y0, x1, y1]}], "ms_per_image": X} (ms averaged over N runs
after one warm-up run).
"""
import argparse
import io
import json
import math
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

# rapidocr 3.10's defaults (config.yaml, ch_ppocr_det/utils.py, ch_ppocr_rec/main.py) unless noted.
MAX_SIDE_LEN = 2000  # Global.max_side_len; rapidocr's extra det upscale (limit_type min, 736) is not done.
THRESH = 0.3
BOX_THRESH = 0.5
UNCLIP_RATIO = 1.6
MAX_CANDIDATES = 1000
MIN_SIZE = 3
TEXT_SCORE = 0.5
REC_HEIGHT = 48
REC_MIN_WIDTH = 320  # rec_img_shape [3, 48, 320]: the narrowest batch width
REC_MAX_WIDTH = 4096  # not rapidocr's: longer lines are squeezed rather than pad every row by megabytes
LINE_Y_TOLERANCE = 10  # rapidocr's _BOX_SORT_Y_THRESHOLD
MAX_DIMENSION = 8192
MAX_PIXELS = 40_000_000


def decode(data):
    """Encoded PNG/JPEG -> u8 [H, W, 3] RGB, transparency composited over white."""
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w == 0 or h == 0 or w > MAX_DIMENSION or h > MAX_DIMENSION or w * h > MAX_PIXELS:
        raise ValueError(f"image is {w}x{h}; at most {MAX_DIMENSION} per side and {MAX_PIXELS} pixels")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)
        a = rgba[..., 3:4]
        return ((rgba[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def det_size(h, w, max_side_len):
    """rapidocr's reduce_max_side: scale the longer side down to the limit, round each side to 32 (at least 32)."""
    ratio = 1.0
    if max(h, w) > max_side_len:
        ratio = max_side_len / h if h > w else max_side_len / w
    rh, rw = int(h * ratio), int(w * ratio)
    # Python's round() is half-to-even, as is Rust's round_ties_even.
    return max(32, int(round(rh / 32)) * 32), max(32, int(round(rw / 32)) * 32)


def _taps(src, dst):
    """Bilinear source taps with half-pixel centres (OpenCV's INTER_LINEAR): index pairs and weights."""
    scale = src / dst
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, src - 1)
    f = (pos - i0).astype(np.float32)
    return i0, i1, f


def resize_normalize(rgb, dh, dw, scale, bias):
    """u8 [h, w, 3] RGB -> f32 [3, dh, dw] BGR planes, bilinear, times `scale` plus `bias`."""
    sh, sw = rgb.shape[:2]
    x0, x1, fx = _taps(sw, dw)
    y0, y1, fy = _taps(sh, dh)
    fx = fx[None, :, None]
    gx = np.float32(1) - fx
    # Gather the needed rows, then columns, as u8 (cheaper than converting the whole image to f32 first).
    rows = [rgb[y0], rgb[y1]]
    top, bot = (gx * r[:, x0].astype(np.float32) + fx * r[:, x1].astype(np.float32) for r in rows)
    fy = fy[:, None, None]
    v = (np.float32(1) - fy) * top + fy * bot
    # Planes B, G, R: PP-OCR was trained on OpenCV's BGR images.
    return (v * np.float32(scale) + np.float32(bias)).transpose(2, 0, 1)[::-1]


def find_boxes(prob, thresh, box_thresh, unclip_ratio, width, height):
    """Prob map [h, w] -> sorted boxes [x0, y0, x1, y1] in original pixels (x1, y1 exclusive) and their scores."""
    h, w = prob.shape
    b = prob > thresh
    # cv2.dilate with a 2x2 kernel (anchor 1,1): a pixel is set when it or its left/upper neighbours are.
    d = b.copy()
    d[1:, :] |= b[:-1, :]
    d[:, 1:] |= b[:, :-1]
    d[1:, 1:] |= b[:-1, :-1]
    # Horizontal runs, then union-find over runs that touch (8-connectivity): DB maps are solid blobs, so there
    # are few runs per row and the Python loop stays short.
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = d
    edges = np.diff(padded, axis=1)
    rs, cs = np.nonzero(edges == 1)
    _, ce = np.nonzero(edges == -1)  # same rows in the same order; ce is exclusive
    n = len(rs)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_start = np.searchsorted(rs, np.arange(h + 1))
    for y in range(1, h):
        a, a_end = row_start[y - 1], row_start[y]
        c, c_end = row_start[y], row_start[y + 1]
        while a < a_end and c < c_end:
            if cs[a] <= ce[c] and cs[c] <= ce[a]:
                ra, rc = find(a), find(c)
                if ra != rc:
                    # The root is the earlier run, so a component's root is its first run in raster order.
                    parent[max(ra, rc)] = min(ra, rc)
            if ce[a] < ce[c]:
                a += 1
            else:
                c += 1
    comps = {}
    for i in range(n):
        r = find(i)
        x0, x1, y = int(cs[i]), int(ce[i]) - 1, int(rs[i])
        if r in comps:
            bb = comps[r]
            bb[0] = min(bb[0], x0)
            bb[1] = max(bb[1], x1)
            bb[3] = y
        else:
            comps[r] = [x0, x1, y, y]
    boxes = []
    for r in sorted(comps)[:MAX_CANDIDATES]:
        xmin, xmax, ymin, ymax = comps[r]
        bw, bh = float(xmax - xmin), float(ymax - ymin)
        if min(bw, bh) < MIN_SIZE:
            continue
        score = float(prob[ymin : ymax + 1, xmin : xmax + 1].mean(dtype=np.float64))
        if score < box_thresh:
            continue
        dist = bw * bh * unclip_ratio / (2.0 * (bw + bh))
        if min(bw, bh) + 2.0 * dist < MIN_SIZE + 2:
            continue
        xs = np.array([xmin - dist, xmax + dist]) / w * width
        ys = np.array([ymin - dist, ymax + dist]) / h * height
        # np.round is half-to-even; then rapidocr's clip to the image, inclusive, then to the last pixel.
        xs = np.clip(np.clip(np.round(xs), 0, width), 0, width - 1).astype(np.int64)
        ys = np.clip(np.clip(np.round(ys), 0, height), 0, height - 1).astype(np.int64)
        if xs[1] - xs[0] <= 3 or ys[1] - ys[0] <= 3:
            continue
        boxes.append(([int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1])], score))
    return sort_boxes(boxes)


def sort_boxes(boxes):
    """rapidocr's sorted_boxes: by top edge; tops within LINE_Y_TOLERANCE of the previous one share a line, which
    is read left to right."""
    boxes = sorted(boxes, key=lambda b: b[0][1])
    line, prev, keyed = 0, None, []
    for b in boxes:
        if prev is not None and b[0][1] - prev >= LINE_Y_TOLERANCE:
            line += 1
        prev = b[0][1]
        keyed.append((line, b[0][0], len(keyed), b))
    return [k[3] for k in sorted(keyed)]


def rec_batch(rgb, boxes):
    """Crops -> f32 [n, 3, 48, W]: each crop scaled to height 48 (aspect kept), zero padded (mid-grey once
    normalised) to the batch width, which is rapidocr's: 48 x the widest aspect ratio, at least 320 (and here at
    most 4096)."""
    max_ratio = REC_MIN_WIDTH / REC_HEIGHT
    for (x0, y0, x1, y1), _ in boxes:
        max_ratio = max(max_ratio, (x1 - x0) / (y1 - y0))
    width = min(int(REC_HEIGHT * max_ratio), REC_MAX_WIDTH)
    batch = np.zeros((len(boxes), 3, REC_HEIGHT, width), dtype=np.float32)
    for i, ((x0, y0, x1, y1), _) in enumerate(boxes):
        rw = min(width, int(math.ceil(REC_HEIGHT * ((x1 - x0) / (y1 - y0)))))
        batch[i, :, :, :rw] = resize_normalize(rgb[y0:y1, x0:x1], REC_HEIGHT, rw, 2.0 / 255.0, -1.0)
    return batch


def ctc_decode(logits, charset):
    """Greedy CTC: best class per step, repeats merged, blanks (0) dropped. Returns (text, mean confidence)."""
    idx = logits.argmax(axis=1)
    prob = logits.max(axis=1)
    keep = idx != 0
    keep[1:] &= idx[1:] != idx[:-1]
    text = "".join(charset[i] for i in idx[keep])
    score = float(prob[keep].mean()) if keep.any() else 0.0
    return text, score


class Pipeline:
    def __init__(self, det_path, rec_path, threads, args):
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.det = ort.InferenceSession(det_path, opts, providers=providers)
        self.rec = ort.InferenceSession(rec_path, opts, providers=providers)
        self.det_in, self.det_out = self.det.get_inputs()[0].name, self.det.get_outputs()[0].name
        self.rec_in, self.rec_out = self.rec.get_inputs()[0].name, self.rec.get_outputs()[0].name
        chars = self.rec.get_modelmeta().custom_metadata_map["character"].splitlines()
        # Class 0 is CTC's blank and the last class is a space the metadata leaves out.
        self.charset = [""] + chars + [" "]
        self.args = args

    def __call__(self, data):
        a = self.args
        rgb = decode(data)
        h0, w0 = rgb.shape[:2]
        rh, rw = det_size(h0, w0, a.max_side_len)
        x = np.ascontiguousarray(resize_normalize(rgb, rh, rw, 2.0 / 255.0, -1.0)[None])
        prob = self.det.run([self.det_out], {self.det_in: x})[0][0, 0]
        boxes = find_boxes(prob, a.thresh, a.box_thresh, a.unclip_ratio, w0, h0)
        if not boxes:
            return []
        logits = self.rec.run([self.rec_out], {self.rec_in: rec_batch(rgb, boxes)})[0]
        lines = []
        for (box, _), row in zip(boxes, logits):
            text, score = ctc_decode(row, self.charset)
            if text and score >= a.text_score:
                lines.append({"text": text, "score": round(score, 5), "box": box})
        return lines


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--det", required=True)
    p.add_argument("--rec", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--max-side-len", type=int, default=MAX_SIDE_LEN)
    p.add_argument("--thresh", type=float, default=THRESH)
    p.add_argument("--box-thresh", type=float, default=BOX_THRESH)
    p.add_argument("--unclip-ratio", type=float, default=UNCLIP_RATIO)
    p.add_argument("--text-score", type=float, default=TEXT_SCORE)
    args = p.parse_args(argv)
    pipeline = Pipeline(args.det, args.rec, args.threads, args)
    with open(args.image, "rb") as f:
        data = f.read()
    lines = pipeline(data)  # warm-up: first runs allocate and pick kernels
    start = time.perf_counter()
    for _ in range(max(1, args.repeat)):
        lines = pipeline(data)
    ms = (time.perf_counter() - start) * 1000 / max(1, args.repeat)
    print(json.dumps({"lines": lines, "ms_per_image": round(ms, 2)}, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
