"""The video writers' encoders: every codec read back through PyAV, the original VideofileWriter
contract, NVENC detection, audio kept, and files that a browser plays."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess

import av
import cv2
import numpy as np
import pytest
from test_samples import run_sample
from video_helpers import assert_clean, expected_frame, mean_abs_diff, run_flow

from videoflow.cli import main as cli_main
from videoflow.consumers import VideofileWriter, VideoWriter, encoders
from videoflow.core import BATCH, Flow
from videoflow.demo import run_demo
from videoflow.errors import FlowError
from videoflow.processors import GaussianBlur
from videoflow.producers import MovingShapesProducer, VideoReader

W, H = 320, 240


@pytest.fixture(autouse=True, scope="module")
def opencv_without_a_thread_pool():
    """These tests encode in the test process itself, and the writer converts colours with
    OpenCV: with its thread pool started here, a later flow started with ``fork`` hangs in its
    tasks' cv2.setNumThreads (the pool's threads do not exist in the child). One thread: no
    pool."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


def read_back(path: str) -> dict:
    """What PyAV finds in ``path``: video codec, size, pix_fmt, frames (BGR), audio codec."""
    with av.open(path) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video)]
        audio = container.streams.audio
        return {
            "codec": video.codec_context.name,
            "size": (video.width, video.height),
            "pix_fmt": video.codec_context.pix_fmt,
            "frames": frames,
            "audio": audio[0].codec_context.name if audio else None,
            "duration": container.duration / av.time_base if container.duration else None,
        }


def write_direct(writer: VideoWriter, frames: list[np.ndarray]) -> None:
    """Drive a writer as its task would: open, consume each frame, close."""
    writer.open()
    try:
        for frame in frames:
            writer.consume(frame)
    finally:
        writer.close()


def shapes(n: int, width: int = W, height: int = H) -> list[np.ndarray]:
    return [expected_frame(i, width, height) for i in range(n)]


# -- codecs -------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("codec", "ext", "decoded_as", "tolerance"),
    [
        ("h264", ".mp4", "h264", 6.0),
        ("hevc", ".mp4", "hevc", 6.0),
        ("vp9", ".webm", "vp9", 8.0),
        ("av1", ".mp4", {"libdav1d", "av1", "libaom-av1"}, 8.0),
        ("mp4v", ".mp4", "mpeg4", 8.0),
        ("mjpeg", ".avi", "mjpeg", 6.0),
    ],
)
def test_each_codec_reads_back_with_its_frames_size_and_colours(
    tmp_path, codec, ext, decoded_as, tolerance
):
    path = str(tmp_path / f"out{ext}")
    frames = shapes(12)
    writer = VideoWriter(path, fps=25, codec=codec)
    write_direct(writer, frames)
    got = read_back(path)
    names = decoded_as if isinstance(decoded_as, set) else {decoded_as}
    assert got["codec"] in names
    assert got["size"] == (W, H)
    assert len(got["frames"]) == 12
    # BGR in, BGR out: a swapped channel order would be off by far more than the coding noise
    for i in (0, 6, 11):
        assert mean_abs_diff(got["frames"][i], frames[i]) < tolerance, (codec, i)


def test_default_codec_follows_the_extension(tmp_path):
    assert VideoWriter(str(tmp_path / "a.mp4")).encoder == "libx264"
    assert VideoWriter(str(tmp_path / "a.mkv")).codec == "h264"
    assert VideoWriter(str(tmp_path / "a.webm")).encoder == "libvpx-vp9"
    assert VideoWriter(str(tmp_path / "a.avi")).encoder == "opencv:MJPG"
    assert VideoWriter(str(tmp_path / "a.avi"), fourcc="XVID").encoder == "opencv:XVID"


@pytest.mark.timeout(120)
def test_h264_flow_writes_yuv420p_with_the_index_first_and_says_which_encoder(tmp_path):
    path = str(tmp_path / "blurred.mp4")
    producer = MovingShapesProducer(W, H, count=30)
    blur = GaussianBlur(ksize=5, nb_tasks=2)(producer)
    writer = VideoWriter(path, fps=25, name="writer")(blur)
    flow = Flow([producer], [writer], flow_type=BATCH)
    flow.run()
    flow.join()
    assert_clean()
    got = read_back(path)
    assert (got["codec"], got["pix_fmt"], got["size"]) == ("h264", "yuv420p", (W, H))
    assert len(got["frames"]) == 30
    assert got["duration"] == pytest.approx(30 / 25, abs=0.05)
    with open(path, "rb") as f:
        head = f.read(4096)
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)
    stats = flow.stats()
    assert "libx264" in stats.notes["writer"]
    assert "writer: H.264 by libx264" in str(flow.report())
    assert stats.to_dict()["notes"] == stats.notes


def test_grey_frames_are_written_as_colour(tmp_path):
    path = str(tmp_path / "grey.mp4")
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in shapes(6)]
    write_direct(VideoWriter(path), grey)
    got = read_back(path)
    assert len(got["frames"]) == 6
    back = cv2.cvtColor(got["frames"][3], cv2.COLOR_BGR2GRAY)
    assert mean_abs_diff(back, grey[3]) < 6.0


@pytest.mark.timeout(120)
def test_crf_and_bitrate_change_the_size(tmp_path):
    frames = [cv2.add(f, np.random.default_rng(i).integers(0, 40, f.shape, np.uint8))
              for i, f in enumerate(shapes(10))]  # noise: something to spend bits on
    sizes = {}
    for label, kwargs in {"crf10": {"crf": 10}, "crf40": {"crf": 40},
                          "rate": {"bitrate": "200k"}}.items():
        path = str(tmp_path / f"{label}.mp4")
        write_direct(VideoWriter(path, preset="ultrafast", threads=1, **kwargs), frames)
        sizes[label] = os.path.getsize(path)
    assert sizes["crf40"] < sizes["crf10"] / 3
    assert sizes["rate"] < sizes["crf10"]


def test_bad_encoder_options_are_rejected_at_creation(tmp_path):
    out = str(tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="unknown codec 'h266'"):
        VideoWriter(out, codec="h266")
    with pytest.raises(ValueError, match="fourcc="):
        VideoWriter(out, codec="XVID")
    with pytest.raises(ValueError, match=r"preset 'turbo'.*ultrafast"):
        VideoWriter(out, preset="turbo")
    with pytest.raises(ValueError, match=r"crf.*0 .*51"):
        VideoWriter(out, crf=60)
    with pytest.raises(ValueError, match="not both"):
        VideoWriter(out, crf=20, bitrate="2M")
    with pytest.raises(ValueError, match="OpenCV, which takes no crf, threads"):
        VideoWriter(out, codec="mp4v", crf=20, threads=2)
    with pytest.raises(ValueError, match="not both"):
        VideoWriter(out, codec="h264", fourcc="mp4v")
    with pytest.raises(ValueError, match="threads"):
        VideoWriter(out, threads=-1)
    with pytest.raises(ValueError, match="bits per second"):
        VideoWriter(out, bitrate="fast")
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(out, fps=0)
    assert encoders.parse_bitrate("4M") == 4_000_000
    assert encoders.parse_bitrate("800k") == 800_000
    assert VideoWriter(out, codec="H265", preset="fast").encoder == "libx265"


def test_odd_frame_size_is_a_clear_error(tmp_path):
    writer = VideoWriter(str(tmp_path / "odd.mp4"))
    writer.open()
    with pytest.raises(ValueError, match="even width and height, got 321x240"):
        writer.consume(np.zeros((240, 321, 3), np.uint8))
    writer.close()


def test_a_frame_of_another_size_is_an_error_naming_the_file(tmp_path):
    path = str(tmp_path / "sizes.mp4")
    writer = VideoWriter(path, name="writer")
    writer.open()
    writer.consume(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(ValueError, match=r"size changed.*sizes\.mp4"):
        writer.consume(np.zeros((120, 160, 3), np.uint8))
    writer.close()


# -- the original videoflow's VideofileWriter ---------------------------------------------------
def test_videofile_writer_keeps_the_original_signature(tmp_path):
    params = list(inspect.signature(VideofileWriter.__init__).parameters.values())[1:4]
    assert [(p.name, p.default) for p in params] == [
        ("video_file", inspect.Parameter.empty), ("swap_channels", True), ("fps", 30)
    ]
    writer = VideofileWriter(str(tmp_path / "out.avi"))  # the original wrote MJPEG .avi
    assert (writer.fps, writer.swap_channels, writer.encoder) == (30.0, True, "opencv:MJPG")
    positional = VideofileWriter(str(tmp_path / "out.avi"), False, 15)
    assert (positional.fps, positional.swap_channels) == (15.0, False)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ext", [".avi", ".mp4"])
def test_swap_channels_true_takes_rgb_frames_false_takes_bgr(tmp_path, ext):
    bgr = shapes(5)
    rgb_file, bgr_file = str(tmp_path / f"rgb{ext}"), str(tmp_path / f"bgr{ext}")
    write_direct(VideofileWriter(rgb_file), [f[:, :, ::-1] for f in bgr])
    write_direct(VideofileWriter(bgr_file, swap_channels=False), bgr)
    for path in (rgb_file, bgr_file):
        got = read_back(path)["frames"]
        assert len(got) == 5
        assert mean_abs_diff(got[2], bgr[2]) < 6.0, path


def test_videofile_writer_resizes_a_frame_of_another_size_like_the_original(tmp_path):
    path = str(tmp_path / "resized.avi")
    frames = [*shapes(2), expected_frame(2, 2 * W, 2 * H)]
    write_direct(VideofileWriter(path, swap_channels=False, fps=25), frames)
    got = read_back(path)
    assert len(got["frames"]) == 3 and got["size"] == (W, H)
    assert mean_abs_diff(got["frames"][2], expected_frame(2, W, H)) < 8.0


# -- NVENC and codec="auto" ---------------------------------------------------------------------
NVENC_PROBLEM = encoders.nvenc_problem("h264_nvenc")


@pytest.mark.skipif(NVENC_PROBLEM is None, reason="this machine has a working NVENC")
def test_nvenc_without_a_gpu_is_a_clear_error_and_auto_takes_libx264(tmp_path):
    out = str(tmp_path / "o.mp4")
    for codec in ("h264_nvenc", "hevc_nvenc"):
        with pytest.raises(RuntimeError, match=rf"{codec}.*NVIDIA.*codec='h264'.*codec='auto'"):
            VideoWriter(out, codec=codec)
    writer = VideoWriter(out, codec="auto", name="writer")
    assert writer.encoder == "libx264"
    assert "codec='auto': NVENC not available" in writer.report_note()


def test_auto_takes_nvenc_where_it_works(monkeypatch, tmp_path):
    monkeypatch.setattr(encoders, "nvenc_problem", lambda encoder="h264_nvenc": None)
    writer = VideoWriter(str(tmp_path / "o.mp4"), codec="auto", crf=23)
    assert writer.encoder == "h264_nvenc"
    assert "H.264 by h264_nvenc" in writer.report_note()
    options = encoders.PyAVEncoder._options(writer.choice.codec, writer.settings)
    assert options == {"rc": "vbr", "cq": "23"}  # NVENC's constant quality


def test_nvenc_detection_looks_for_the_driver_first(monkeypatch):
    monkeypatch.setattr(encoders.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(encoders.os.path, "exists", lambda path: False)
    assert "no NVIDIA driver" in (encoders._nvenc_driver_problem() or "")


@pytest.mark.timeout(120)
@pytest.mark.skipif(NVENC_PROBLEM is not None, reason=f"no NVENC here: {NVENC_PROBLEM}")
@pytest.mark.parametrize(("codec", "decoded_as"), [("h264_nvenc", "h264"), ("hevc_nvenc", "hevc")])
def test_nvenc_writes_a_file_that_reads_back(tmp_path, codec, decoded_as):
    path = str(tmp_path / "gpu.mp4")
    frames = shapes(30, 640, 480)
    write_direct(VideoWriter(path, codec=codec), frames)
    got = read_back(path)
    assert (got["codec"], got["size"], len(got["frames"])) == (decoded_as, (640, 480), 30)
    assert mean_abs_diff(got["frames"][15], frames[15]) < 8.0


# -- audio --------------------------------------------------------------------------------------
def write_clip_with_audio(path: str, nb_frames: int = 50, fps: int = 25) -> str:
    """An H.264 + AAC clip: the shapes and a 440 Hz tone as long as the video."""
    rate, chunk = 48_000, 1024
    with av.open(path, "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="mono")
        for i in range(nb_frames):
            frame = av.VideoFrame.from_ndarray(expected_frame(i, W, H), format="bgr24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total = rate * nb_frames // fps
        for start in range(0, total, chunk):
            t = np.arange(start, min(start + chunk, total)) / rate
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def audio_packets(path: str) -> tuple[list[bytes], float]:
    """The audio packets' payloads and where the audio ends, in seconds."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        payloads, end = [], 0.0
        for packet in container.demux(stream):
            if packet.size:
                payloads.append(bytes(packet))
                end = max(end, float((packet.pts + packet.duration) * stream.time_base))
        return payloads, end


@pytest.mark.timeout(120)
def test_copy_audio_from_keeps_the_sound_without_re_encoding(tmp_path):
    src = write_clip_with_audio(str(tmp_path / "src.mp4"), nb_frames=50)
    out = str(tmp_path / "processed.mp4")
    reader = VideoReader(src, nb_frames=30)  # keep 1.2 s of the 2 s clip
    blur = GaussianBlur(ksize=5, nb_tasks=2)(reader)
    writer = VideoWriter(out, copy_audio_from=src, name="writer")(blur)
    stats = run_flow(reader, [writer])
    assert stats.delivered == 30
    assert "audio copied from" in stats.notes["writer"]
    got = read_back(out)
    assert (got["codec"], got["audio"], len(got["frames"])) == ("h264", "aac", 30)
    source_payloads, _ = audio_packets(src)
    payloads, audio_end = audio_packets(out)
    # copied bit for bit, cut where the video ends (one AAC packet is 21 ms)
    assert payloads == source_payloads[: len(payloads)]
    assert 30 / 25 - 0.03 <= audio_end <= 30 / 25 + 0.05
    assert sorted(os.listdir(tmp_path)) == ["processed.mp4", "src.mp4"]  # no temporary left


def test_copy_audio_from_works_with_opencv_codecs_too(tmp_path):
    src = write_clip_with_audio(str(tmp_path / "src.mp4"), nb_frames=10)
    out = str(tmp_path / "mp4v.mp4")
    write_direct(VideoWriter(out, codec="mp4v", copy_audio_from=src), shapes(10))
    got = read_back(out)
    assert (got["codec"], got["audio"], len(got["frames"])) == ("mpeg4", "aac", 10)


def test_copy_audio_from_a_file_without_sound_fails_at_creation(tmp_path):
    silent = str(tmp_path / "silent.mp4")
    write_direct(VideoWriter(silent), shapes(2))
    with pytest.raises(ValueError, match=r"silent\.mp4.*no audio"):
        VideoWriter(str(tmp_path / "o.mp4"), copy_audio_from=silent)
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        VideoWriter(str(tmp_path / "o.mp4"), copy_audio_from=str(tmp_path / "nope.mp4"))


@pytest.mark.timeout(60)
def test_a_failing_writer_names_itself_in_the_flow_error(tmp_path):
    producer = MovingShapesProducer(W + 1, H, count=3)
    writer = VideoWriter(str(tmp_path / "odd.mp4"), name="writer")(producer)
    with pytest.raises(FlowError, match="writer") as info:
        run_flow(producer, [writer])
    assert "even width and height" in str(info.value)


# -- as a user sees it: a browser plays the files -----------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html><html><body style="margin:0;background:#000">
<video id="v" muted preload="auto" src="{src}" style="width:640px;display:block"></video>
<pre id="out" style="color:#fff;margin:0">pending</pre>
<script>
const v = document.getElementById('v'), out = document.getElementById('out');
v.addEventListener('error', () => {{
  out.textContent = JSON.stringify({{error: v.error && v.error.message}}); }});
v.addEventListener('loadedmetadata', () => {{ v.currentTime = Math.min(1.0, v.duration / 2); }});
v.addEventListener('seeked', () => {{ out.textContent = JSON.stringify(
  {{duration: v.duration, videoWidth: v.videoWidth, videoHeight: v.videoHeight}}); }});
</script></body></html>
"""


def play_in_chromium(video: str, folder: str) -> tuple[dict, str]:
    """Load ``video`` in a <video> element of headless Chromium: what the page reads
    (duration, videoWidth, videoHeight, or error) and a screenshot of the frame at 1 s."""
    page = os.path.join(folder, "page.html")
    with open(page, "w") as f:
        f.write(PAGE.format(src="file://" + os.path.abspath(video)))
    shot = os.path.join(folder, "shot.png")
    base = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
        "--allow-file-access-from-files", f"--user-data-dir={os.path.join(folder, 'profile')}",
        "--virtual-time-budget=10000", "--window-size=660,520",
    ]
    url = "file://" + page
    dom = run_browser([*base, "--dump-dom", url])
    run_browser([*base, f"--screenshot={shot}", url])
    text = dom.split('<pre id="out"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    return (json.loads(text) if text.startswith("{") else {"raw": text}), shot


def run_browser(command: list[str], timeout: float = 90) -> str:
    """Run Chromium in its own session, niced and without CAP_SYS_NICE (as root it gives its
    threads real-time priority, and a spinning one then starves the machine and shrugs off
    SIGKILL); on timeout the whole session is killed. Returns its stdout."""
    guard = ["nice", "-n", "10"]
    if shutil.which("setpriv"):
        guard = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", *guard]
    proc = subprocess.Popen(
        [*guard, *command], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise
    return out


def assert_plays(video: str, folder: str, width: int, height: int, seconds: float) -> str:
    os.makedirs(folder, exist_ok=True)
    seen, shot = play_in_chromium(video, folder)
    assert seen.get("videoWidth") == width, seen
    assert seen.get("videoHeight") == height, seen
    assert seen["duration"] == pytest.approx(seconds, abs=0.1)
    image = cv2.imread(shot)
    assert image is not None, "no screenshot"
    picture = image[: 640 * height // width, :640]  # the <video> element's area
    assert picture.std() > 10, "the video area is blank: nothing was drawn"
    return shot


@pytest.mark.timeout(240)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_demo_output_plays_in_a_browser_and_reads_back(tmp_path):
    out = str(tmp_path / "demo.mp4")
    stats = run_demo(out, nb_frames=30, nb_tasks=2)
    assert_clean()
    assert stats.delivered == 30
    got = read_back(out)
    assert (got["codec"], got["size"], len(got["frames"])) == ("h264", (1280, 720), 30)
    shot = assert_plays(out, str(tmp_path / "browser"), 1280, 720, 30 / 25)
    # the screenshot shows the frame at 1 s: the decoded frame 25 of the file, scaled to 640
    frame = cv2.resize(got["frames"][25], (640, 360), interpolation=cv2.INTER_AREA)
    assert mean_abs_diff(cv2.imread(shot)[:360, :640], frame) < 12.0


@pytest.mark.timeout(240)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_sample_output_plays_in_a_browser_and_reads_back(tmp_path):
    # Without its sound: twice, on a machine with a load average of 60, headless Chromium's
    # audio path spun on both CPUs with a muted AAC track and did not take SIGKILL until its
    # threads' scheduling was reset. The sound is checked through PyAV in the next test.
    src = write_clip_with_audio(str(tmp_path / "in.mp4"), nb_frames=40)
    out = str(tmp_path / "blurred.mp4")
    result = run_sample("blur_video.py", src, out, "--ksize", "9")
    assert result.returncode == 0, result.stdout
    got = read_back(out)
    assert (got["codec"], got["audio"], got["size"], len(got["frames"])) == (
        "h264", None, (W, H), 40
    )
    assert_plays(out, str(tmp_path / "browser"), W, H, 40 / 25)


@pytest.mark.timeout(120)
def test_sample_keeps_the_sound_with_keep_audio(tmp_path):
    src = write_clip_with_audio(str(tmp_path / "in.mp4"), nb_frames=40)
    out = str(tmp_path / "blurred.mp4")
    result = run_sample("blur_video.py", src, out, "--ksize", "9", "--keep-audio")
    assert result.returncode == 0, result.stdout
    got = read_back(out)
    assert (got["codec"], got["audio"], len(got["frames"])) == ("h264", "aac", 40)
    assert audio_packets(out)[0] == audio_packets(src)[0][: len(audio_packets(out)[0])]


@pytest.mark.timeout(120)
def test_the_demo_command_says_which_encoder_wrote(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert cli_main(["demo", "--frames", "6", "--no-progress", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    expected = "h264_nvenc" if NVENC_PROBLEM is None else "libx264"
    assert f"writer: H.264 by {expected}" in text
    assert "codec='auto'" in text

