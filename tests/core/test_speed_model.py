"""Measured, not guessed, speed: the CPU probe and its cache, the speed model (decode by bandwidth,
prompt by arithmetic), the speeds the app remembers after a reply, and plans calibrated by them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mixtral_desk.core import cpu_speed, measured_speeds
from mixtral_desk.core.cpu_speed import CpuSpeed, cpu_speed_profile, measure_cpu_speed
from mixtral_desk.core.engine import BackendInfo, ModelInfo, ReplyStats, SamplingOptions
from mixtral_desk.core.gguf.model_file import ModelFacts, inspect_model
from mixtral_desk.core.hardware import Hardware, detect_hardware
from mixtral_desk.core.measured_speeds import (
    MAX_SAMPLES,
    load_model_speeds,
    model_identity,
    record,
    remember_reply,
    speeds_for_facts,
)
from mixtral_desk.core.memory_model import memory_model_from_facts
from mixtral_desk.core.model_layout import layout_from_facts
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.planner import evaluate, plan_offload, simulated_machine
from mixtral_desk.core.session import LoadChoice, Session
from mixtral_desk.core.session.loading import LoadReport
from mixtral_desk.core.settings import LoadDefaults, Settings
from mixtral_desk.core.speed_model import (
    ATTENTION_SHARE,
    BANDWIDTH_SHARE,
    CPU_ATTENTION_FLOPS,
    CPU_LAYER_SECONDS,
    FLOPS_SHARE,
    GPU_LAYER_SECONDS,
    THREAD_STREAM_SHARE,
    THREAD_WEIGHT_SHARE,
    TOKEN_SECONDS,
    Calibration,
    ModelShape,
    Rates,
    Sample,
    Traffic,
    calibrate,
    cpu_rates,
    decode_seconds,
    prompt_seconds,
)
from mixtral_desk.core.store import Store
from mixtral_desk.core.units import GiB
from tests.mixtral_header import write_bench_header

MEASURED_CPU = CpuSpeed(bandwidth_one=28e9, bandwidth_all=32e9, threads=2, flops=185e9)
HARDWARE = "test-hardware"


def hardware(cpu: str = "Test CPU", cores: int = 8, ram: float = 64) -> Hardware:
    return Hardware(ram_total=int(ram * GiB), ram_available=int(ram * 0.8 * GiB),
                    cpu_physical_cores=cores, cpu_logical_cores=2 * cores, cpu_name=cpu,
                    os_name="Linux", os_platform="Linux", machine="x86_64")


def stats(decode: float = 100.0, completion: int = 64, prompt: int = 300, cached: int = 0,
          ttft: float = 1.0) -> ReplyStats:
    return ReplyStats(prompt_tokens=prompt, completion_tokens=completion,
                      time_to_first_token_s=ttft, decode_tokens_per_s=decode,
                      total_seconds=ttft + completion / decode, finish_reason="length",
                      cached_tokens=cached)


@pytest.fixture(scope="module")
def bench_facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    return inspect_model(write_bench_header(tmp_path_factory.mktemp("b") / "bench-moe.gguf"))


# --- the CPU probe and its cache ----------------------------------------------------------------

def test_the_probe_measures_this_machine() -> None:
    speed = measure_cpu_speed(2)
    assert speed.threads == 2 and speed.bandwidth_all >= speed.bandwidth_one > 1e9
    assert speed.flops > 1e9
    assert speed.bandwidth(1) == speed.bandwidth_one and speed.bandwidth(64) == speed.bandwidth_all
    assert speed.flops_with(1) == speed.flops / 2 and speed.flops_with(None) == speed.flops


def test_the_speed_is_cached_with_the_hardware(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[int | None] = []

    def fake_probe(threads: int | None = None) -> CpuSpeed:
        probes.append(threads)
        return CpuSpeed(20e9 + len(probes), 30e9, threads or 1, 1e11)

    monkeypatch.setattr(cpu_speed, "measure_cpu_speed", fake_probe)
    monkeypatch.setattr(cpu_speed, "_speed_memo", {})
    file = tmp_path / "cpu-speed.json"
    first = cpu_speed_profile(hardware(), cache_file=file)
    assert probes == [8] and first is not None and first.threads == 8
    assert json.loads(file.read_text())["speed"]["bandwidth_one"] == first.bandwidth_one
    assert cpu_speed_profile(hardware(), cache_file=file) == first and len(probes) == 1
    # Another CPU, core count or RAM size measures again (and replaces the file).
    assert cpu_speed_profile(hardware(cpu="Other CPU"), cache_file=file) != first
    assert cpu_speed_profile(hardware(cores=4), cache_file=file) is not None
    assert cpu_speed_profile(hardware(ram=128), cache_file=file) is not None
    assert len(probes) == 4
    file.write_text("{not json")  # a corrupt file is measured again
    assert cpu_speed_profile(hardware(), cache_file=file) is not None and len(probes) == 5
    file.write_text(json.dumps({"fingerprint": cpu_speed.hardware_fingerprint(hardware()),
                                "speed": {"bandwidth_one": -1, "bandwidth_all": 1,
                                          "threads": 1, "flops": 1}}))
    assert cpu_speed_profile(hardware(), cache_file=file) is not None and len(probes) == 6
    assert cpu_speed_profile(hardware(), cache_file=file, refresh=True) is not None
    assert len(probes) == 7
    # The default file is in the cache folder; this process remembers it too.
    remembered = cpu_speed_profile(hardware(cpu="Default CPU"))
    assert (tmp_path / "desk-home" / "cache" / "cpu-speed.json").exists()
    assert cpu_speed_profile(hardware(cpu="Default CPU")) is remembered and len(probes) == 8


def test_a_failing_probe_is_no_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    def broken(threads: int | None = None) -> CpuSpeed:
        raise MemoryError("no room")

    monkeypatch.setattr(cpu_speed, "measure_cpu_speed", broken)
    monkeypatch.setattr(cpu_speed, "_speed_memo", {})
    with caplog.at_level(logging.INFO, "mixtral_desk.core.cpu_speed"):
        assert cpu_speed_profile(hardware(), cache_file=tmp_path / "s.json") is None
    assert "probe failed" in caplog.text


def test_detect_hardware_has_the_measured_speed() -> None:
    found = detect_hardware(probe_gpus=False)
    assert found.cpu_speed is not None and found.cpu_speed.bandwidth_all > 1e9
    assert any(line.startswith("Memory bandwidth: ") and "(measured)" in line
               for line in found.summary_lines())
    assert detect_hardware(probe_gpus=False, probe_speed=False).cpu_speed is None
    assert json.loads(json.dumps(found.to_json_dict()))["cpu_speed"]["threads"] >= 1


# --- the speed model ------------------------------------------------------------------------------

CPU_ONLY = Traffic(gpu_weights=0, cpu_weights=200e6, gpu_kv=0, cpu_kv=8192, gpu_layers=0,
                   cpu_layers=8, host_bytes=650e6, gpu_bytes=0)


def test_decode_is_bound_by_bandwidth_or_by_the_threads() -> None:
    fixed = 8 * CPU_LAYER_SECONDS + TOKEN_SECONDS
    fast_threads = Rates(cpu_bandwidth=20e9, cpu_stream=1e12, cpu_flops=1e11)
    assert decode_seconds(CPU_ONLY, fast_threads, 0) == pytest.approx(0.01 + fixed)
    one_thread = Rates(cpu_bandwidth=20e9, cpu_stream=10e9, cpu_flops=1e11)
    assert decode_seconds(CPU_ONLY, one_thread, 0) == pytest.approx(0.02 + fixed)
    # Attention over the KV cache grows with the context: its bytes, and arithmetic per layer.
    assert decode_seconds(CPU_ONLY, fast_threads, 100_000) == pytest.approx(
        (200e6 + 8192 * 100_000) / 20e9 + 8 * 100_000 * CPU_ATTENTION_FLOPS / 1e11 + fixed)
    split = Traffic(gpu_weights=150e6, cpu_weights=50e6, gpu_kv=4096, cpu_kv=4096,
                    gpu_layers=4, cpu_layers=4, host_bytes=200e6, gpu_bytes=450e6,
                    split_layers=2)
    with_gpu = Rates(cpu_bandwidth=20e9, cpu_stream=1e12, cpu_flops=1e11, gpu_bandwidth=1e12,
                     gpu_flops=6e13, link=25e9)
    assert decode_seconds(split, with_gpu, 0) == pytest.approx(
        50e6 / 20e9 + 150e6 / 1e12 + 6 * CPU_LAYER_SECONDS + 4 * GPU_LAYER_SECONDS
        + TOKEN_SECONDS)


def test_cpu_rates_from_the_probe() -> None:
    rates = cpu_rates(MEASURED_CPU)
    assert rates.bandwidth == max(28e9, 32e9 * BANDWIDTH_SHARE)
    assert rates.flops == 185e9 * FLOPS_SHARE
    assert rates.stream == 2 * 28e9 * THREAD_STREAM_SHARE
    assert rates.weight_rate == 185e9 * THREAD_WEIGHT_SHARE
    one = cpu_rates(MEASURED_CPU, threads=1)
    assert (one.bandwidth, one.stream, one.flops) == (28e9, 28e9 * THREAD_STREAM_SHARE,
                                                      185e9 / 2 * FLOPS_SHARE)
    assert cpu_rates(MEASURED_CPU, threads=1, batch_threads=2).flops == rates.flops


def test_more_weights_a_byte_decode_slower() -> None:
    """A Q2_K byte holds three times the weights of a Q8_0 byte: the threads take it in slower."""
    rates = Rates(cpu_bandwidth=28e9, cpu_stream=60e9, cpu_flops=1e11, cpu_weight_rate=60e9)
    q8 = decode_seconds(CPU_ONLY, rates, 0, ModelShape(params_per_byte=0.94))
    q2 = decode_seconds(CPU_ONLY, rates, 0, ModelShape(params_per_byte=2.96))
    fixed = 8 * CPU_LAYER_SECONDS + TOKEN_SECONDS
    assert q8 == pytest.approx(200e6 / 28e9 + fixed)  # bound by the memory
    assert q2 == pytest.approx(200e6 / 60e9 + 200e6 * 2.96 / 60e9 + fixed)  # by the threads


def test_prompt_evaluation_is_bound_by_arithmetic_and_grows_with_the_context() -> None:
    shape = ModelShape(params_per_byte=0.94, attention_flops=4096)
    rates = Rates(cpu_bandwidth=20e9, cpu_stream=1e12, cpu_flops=1e11)
    seconds = prompt_seconds(CPU_ONLY, rates, shape, 512)
    matmul = 512 * 2 * 0.94 * 200e6 / 1e11
    attention = 4096 * 256 * 512 * 8 / (1e11 * ATTENTION_SHARE)
    assert seconds == pytest.approx(matmul + attention)
    assert prompt_seconds(CPU_ONLY, rates, shape, 512, start=20_000) > 1.5 * seconds
    assert prompt_seconds(CPU_ONLY, rates, shape, 0) == 0.0
    # A short prompt of a big MoE reads every weight once: memory, not arithmetic.
    assert prompt_seconds(CPU_ONLY, rates, ModelShape(0.94, 0), 1) == pytest.approx(650e6 / 20e9)
    # With a discrete GPU the weights kept in RAM are copied over PCIe for each batch.
    hybrid = Traffic(gpu_weights=1e9, cpu_weights=3e9, gpu_kv=0, cpu_kv=0, gpu_layers=32,
                     cpu_layers=0, host_bytes=20e9, gpu_bytes=5e9)
    gpu = Rates(cpu_bandwidth=20e9, cpu_stream=1e12, cpu_flops=1e11, gpu_bandwidth=1e12,
                gpu_flops=6e13, link=25e9)
    assert prompt_seconds(hybrid, gpu, ModelShape(1.8, 0), 512) == pytest.approx(20e9 / 25e9)
    unified = Rates(cpu_bandwidth=60e9, cpu_stream=1e12, cpu_flops=2e11, gpu_bandwidth=4e11,
                    gpu_flops=8e12)
    assert prompt_seconds(hybrid, unified, ModelShape(1.8, 0), 512) == pytest.approx(
        512 * 3.6 * 1e9 / 8e12 + 512 * 3.6 * 3e9 / 2e11)


def test_calibration_prefers_the_exact_placement() -> None:
    samples = [Sample("decode", 50.0, 300, 64, exact=True),
               Sample("decode", 60.0, 300, 64, exact=True),
               Sample("decode", 70.0, 300, 64, exact=True),
               Sample("decode", 10.0, 300, 64, exact=False),
               Sample("prompt", 200.0, 0, 300, exact=False)]
    cal = calibrate(samples, lambda s: 100.0)
    assert (cal.decode_factor, cal.measured_decode) == (0.6, 60.0)
    assert (cal.prompt_factor, cal.measured_prompt) == (2.0, None)
    assert cal.replies == 4 and cal.calibrated
    others = calibrate(samples[3:4], lambda s: 20.0)
    assert (others.decode_factor, others.measured_decode) == (0.5, None)
    assert calibrate([], lambda s: 1.0) == Calibration()


# --- remembered speeds ----------------------------------------------------------------------------

KEY = (0, 0, (), 2, "f16")


def test_speeds_are_remembered_per_model_and_placement(tmp_path: Path) -> None:
    file = tmp_path / "speeds.json"
    assert record("m.gguf|1", KEY, stats(), path=file, fingerprint=HARDWARE)
    assert record("m.gguf|1", (9, 4, ("down",), 2, "f16"), stats(decode=50), path=file,
                  fingerprint=HARDWARE)
    speeds = load_model_speeds("m.gguf|1", path=file, fingerprint=HARDWARE)
    assert speeds is not None
    decode = [s for s in speeds.samples if s.kind == "decode"]
    assert [(s.placement_key, s.tokens_per_s, s.position, s.tokens) for s in decode] == [
        (KEY, 100.0, 332.0, 64), ((9, 4, ("down",), 2, "f16"), 50.0, 332.0, 64)]
    prompt = [s for s in speeds.samples if s.kind == "prompt"]
    assert [(s.tokens_per_s, s.position, s.tokens) for s in prompt] == [(300.0, 0, 300)] * 2
    assert load_model_speeds("other.gguf|1", path=file, fingerprint=HARDWARE) is None
    assert load_model_speeds(None, path=file, fingerprint=HARDWARE) is None
    # Measured on other hardware: as if nothing had been.
    assert load_model_speeds("m.gguf|1", path=file, fingerprint="new CPU") is None


def test_only_the_newest_samples_of_meaningful_replies_are_kept(tmp_path: Path) -> None:
    file = tmp_path / "speeds.json"
    for i in range(MAX_SAMPLES + 3):
        record("m|1", KEY, stats(decode=10 + i), path=file, fingerprint=HARDWARE)
    speeds = load_model_speeds("m|1", path=file, fingerprint=HARDWARE)
    assert speeds is not None
    rates = [s.tokens_per_s for s in speeds.samples if s.kind == "decode"]
    assert rates == [10.0 + i for i in range(3, MAX_SAMPLES + 3)]
    # Too short to say anything: a reply of 3 tokens; a prompt mostly from the cache.
    assert not record("short|1", KEY, stats(completion=3, prompt=40), path=file,
                      fingerprint=HARDWARE)
    assert record("cached|1", KEY, stats(prompt=300, cached=280), path=file, fingerprint=HARDWARE)
    cached = load_model_speeds("cached|1", path=file, fingerprint=HARDWARE)
    assert cached is not None and {s.kind for s in cached.samples} == {"decode"}


def test_a_corrupt_speeds_file_counts_as_empty(tmp_path: Path) -> None:
    file = tmp_path / "speeds.json"
    for text in ("{not json", "[]", json.dumps({"version": 1, "hardware": HARDWARE,
                                                "models": {"m|1": {"gpu=x": {"decode": [[1]]}}}})):
        file.write_text(text)
        assert load_model_speeds("m|1", path=file, fingerprint=HARDWARE) is None
        assert record("m|1", KEY, stats(), path=file, fingerprint=HARDWARE)
        assert load_model_speeds("m|1", path=file, fingerprint=HARDWARE) is not None


def test_remember_reply_keys_by_the_load(tmp_path: Path, data_home: DataPaths) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"x" * 100)
    backend = BackendInfo(("CPU",), False, "", "0.3.36")
    info = ModelInfo(str(model), 1024, 32768, 8, 0, backend, None, "model", 1.0, 6)
    report = LoadReport(n_cpu_moe=2, settings=LoadDefaults(n_threads=3, kv_type="f16"))
    assert remember_reply(info, report, LoadChoice(model, n_threads=1), stats())
    assert not remember_reply(info, None, None, stats())
    assert not remember_reply(None, report, None, stats())
    speeds = load_model_speeds(model_identity(model))
    assert speeds is not None
    assert {s.placement_key for s in speeds.samples} == {(0, 2, (), 1, "f16")}
    assert (data_home.cache_dir / "measured-speeds.json").exists()


# --- plans calibrated by what was measured ----------------------------------------------------

def test_plans_are_calibrated_by_measured_replies(bench_facts: ModelFacts, tmp_path: Path) -> None:
    model = memory_model_from_facts(bench_facts, 1024)
    layout = layout_from_facts(bench_facts)
    machine = simulated_machine(ram=16 * GiB, cpu=MEASURED_CPU)
    plain = plan_offload(model, machine, layout=layout)
    assert plain.verdict == "cpu" and not plain.calibration.calibrated
    assert "tok/s by memory bandwidth" in plain.explanation
    assert plain.speed is not None and plain.prompt_tokens_per_s > plain.tokens_per_s
    assert plain.speed.decode_full < plain.tokens_per_s
    file = tmp_path / "speeds.json"
    predicted = evaluate(model, machine, 0, 0, layout=layout).tokens_per_s(machine, 332)
    for decode in (0.7, 0.8, 0.9):
        record("bench|1", (0, 0, (), 2, "f16"), stats(decode=predicted * decode), path=file,
               fingerprint=HARDWARE)
    measured = load_model_speeds("bench|1", path=file, fingerprint=HARDWARE)
    plan = plan_offload(model, machine, layout=layout, measured=measured)
    assert plan.tokens_per_s == pytest.approx(plain.tokens_per_s * 0.8, rel=1e-5)
    cal = plan.calibration
    assert cal.measured_decode == pytest.approx(predicted * 0.8, rel=1e-5) and cal.replies == 6
    assert "as measured on this machine" in plan.explanation
    data = plan.to_json_dict()
    assert data["measured_decode_tokens_per_s"] == pytest.approx(predicted * 0.8, abs=0.01)
    assert data["decode_tokens_per_s"] == round(plan.tokens_per_s, 2)
    assert data["machine"]["cpu_measured"] and data["calibrated_by_replies"] == 6
    # Measured with 1 thread only: the model is calibrated, this placement not measured.
    other = tmp_path / "other.json"
    record("bench|1", (0, 0, (), 1, "f16"), stats(decode=40), path=other, fingerprint=HARDWARE)
    one = plan_offload(model, machine, layout=layout,
                       measured=load_model_speeds("bench|1", path=other, fingerprint=HARDWARE))
    assert one.calibration.calibrated and one.calibration.measured_decode is None


def test_speed_lines_say_what_was_measured(bench_facts: ModelFacts, tmp_path: Path) -> None:
    from mixtral_desk.core.cli.plan_commands import speed_lines

    model = memory_model_from_facts(bench_facts, 1024)
    machine = simulated_machine(ram=16 * GiB, cpu=MEASURED_CPU)
    lines = speed_lines(plan_offload(model, machine, layout=layout_from_facts(bench_facts)))
    assert lines[0].startswith("Speed:    decode about ") and "prompt about" in lines[0]
    assert lines[1].startswith("Basis:    CPU memory bandwidth 28.0 GB/s and 111 GFLOP/s")
    assert "measured on this machine" in lines[1] and len(lines) == 2
    estimated = speed_lines(plan_offload(model, simulated_machine(ram=16 * GiB)))
    assert "estimates: this CPU was not measured" in estimated[1]
    file = tmp_path / "speeds.json"
    record("bench|1", (0, 0, (), 2, "f16"), stats(decode=90), path=file, fingerprint=HARDWARE)
    measured = load_model_speeds("bench|1", path=file, fingerprint=HARDWARE)
    lines = speed_lines(plan_offload(model, machine, measured=measured))
    assert lines[2] == ("Measured: decode 90.0 tok/s, prompt 300 tok/s with this placement on "
                        "this machine; predictions calibrated by 2 replies")


def cli_json(*args: str | Path) -> Any:
    result = subprocess.run([sys.executable, "-m", "mixtral_desk", *map(str, args), "--json"],
                            capture_output=True, text=True, timeout=120, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_command_says_the_speeds(bench_facts: ModelFacts, data_home: DataPaths) -> None:
    data = cli_json("plan", "--model", bench_facts.path, "--ctx", "1024", "--vram", "0")
    assert data["decode_tokens_per_s"] > 0 and data["prompt_tokens_per_s"] > 0
    assert data["decode_tokens_per_s_full_context"] <= data["decode_tokens_per_s"]
    assert data["machine"]["cpu_measured"] and data["measured_decode_tokens_per_s"] is None
    identity = model_identity(bench_facts.path)
    assert identity is not None
    threads = data["machine"]["threads"]
    record(identity, (0, 0, (), threads, "f16"), stats(decode=42.0))
    again = cli_json("plan", "--model", bench_facts.path, "--ctx", "1024", "--vram", "0")
    assert again["measured_decode_tokens_per_s"] == 42.0
    assert "as measured on this machine" in again["explanation"]
    assert speeds_for_facts(bench_facts) is not None


# --- a session remembers its replies' speeds ----------------------------------------------------

def test_a_session_remembers_its_replies(tiny_model: Path, data_home: DataPaths) -> None:
    settings = Settings(load=LoadDefaults(n_ctx=512, idle_unload_minutes=0, n_threads=1),
                        sampling=SamplingOptions(temperature=0.0, max_tokens=12, ignore_eos=True,
                                                 seed=1))
    with Store.open(data_home.database) as store, Session(settings) as session:
        session.load(LoadChoice(tiny_model))
        result = session.send(store, None, "Hello")
        assert result.stats is not None and result.stats.completion_tokens == 12
    speeds = speeds_for_facts(inspect_model(tiny_model))
    assert speeds is not None
    [decode] = [s for s in speeds.samples if s.kind == "decode"]
    assert decode.placement_key == (0, 0, (), 1, "f16") and decode.tokens == 12
    assert decode.tokens_per_s == pytest.approx(result.stats.decode_tokens_per_s, rel=1e-3)


def test_remembering_never_breaks_a_turn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> bool:
        raise OSError("disk full")

    monkeypatch.setattr(measured_speeds, "record", broken)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    backend = BackendInfo(("CPU",), False, "", "0.3.36")
    info = ModelInfo(str(model), 1024, 32768, 8, 0, backend, None, "model", 1.0, 0)
    assert not remember_reply(info, LoadReport(settings=LoadDefaults()), None, stats())
