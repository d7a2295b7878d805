"""ganlab's own game (env=dodge), environments by name, and random-policy rollouts on disk."""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pytest
from conftest import assert_bad_input, run_in_process

from ganlab.envs import DodgeEnv, make_env
from ganlab.envs.rollouts import RandomPolicy, play_episode, read, record
from ganlab.errors import UserError


def play(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames, rewards, ends = [obs], [], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        frames.append(obs)
        rewards.append(reward)
        ends.append((terminated, truncated))
        if terminated or truncated:
            break
    return np.stack(frames), rewards, ends


def test_dodge_has_gymnasiums_api_and_frames():
    env = DodgeEnv(size=64, max_steps=500)
    obs, info = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and info == {}
    assert env.observation_space.shape == (64, 64, 3) and env.action_space.n == 3
    assert env.observation_space.contains(obs)
    out = env.step(2)
    assert len(out) == 5 and out[1] == 1.0 and isinstance(out[2], bool)
    assert out[0].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="actions 0"):
        env.step(3)
    # the agent is drawn where it stands: moving right moves its green pixels right
    env.reset(seed=3)
    before = np.argwhere((env.render() == [60, 200, 90]).all(-1))[:, 1].mean()
    for _ in range(5):
        env.step(2)
    after = np.argwhere((env.render() == [60, 200, 90]).all(-1))[:, 1].mean()
    assert after > before + 5


def test_dodge_is_deterministic_under_a_seed_and_ends_on_a_hit_or_max_steps():
    actions = np.random.default_rng(0).integers(0, 3, 400)
    a = play(DodgeEnv(max_steps=400), 7, actions)
    b = play(DodgeEnv(max_steps=400), 7, actions)
    c = play(DodgeEnv(max_steps=400), 8, actions)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    n = min(len(a[0]), len(c[0]))
    assert not np.array_equal(a[0][:n], c[0][:n])
    assert a[2][-1][0] and not a[2][-1][1]  # hit (terminated) well before 400 steps
    assert all(r == 1.0 for r in a[1])
    # a short limit truncates
    _, rewards, ends = play(DodgeEnv(max_steps=3), 7, [1, 1, 1, 1])
    assert len(rewards) == 3 and ends[-1] == (False, True)


def test_environments_by_name_and_their_errors(monkeypatch):
    assert isinstance(make_env("dodge", size=32), DodgeEnv)
    assert make_env("dodge", size=32).reset(seed=0)[0].shape == (32, 32, 3)
    with pytest.raises(UserError, match=r"unknown environment env='pong'.*dodge"):
        make_env("pong")
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # as if it were not installed
    with pytest.raises(UserError, match=r"Gymnasium is not installed: pip install"):
        make_env("CarRacing-v3")


def test_rollouts_are_recorded_read_back_and_deterministic(tmp_path):
    record("dodge", 3, seed=5, size=32, max_steps=40, out=tmp_path / "a", progress=False)
    record("dodge", 3, seed=5, size=32, max_steps=40, out=tmp_path / "b", progress=False)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["env"] == "dodge" and meta["size"] == 32 and meta["discrete_actions"]
    files = sorted((tmp_path / "a").glob("episode_*.npz"))
    assert len(files) == 3
    for f in files:
        with np.load(f) as x, np.load(tmp_path / "b" / f.name) as y:
            assert all(np.array_equal(x[k], y[k]) for k in x.files)
            t = len(x["actions"])
            assert x["frames"].shape == (t + 1, 32, 32, 3) and x["frames"].dtype == np.uint8
            assert x["terminated"][-1] or x["truncated"][-1]
            assert not (x["terminated"][:-1].any() or x["truncated"][:-1].any())
    episodes = read(tmp_path / "a")
    assert episodes.n_episodes == 3 and episodes.size == 32
    assert episodes.frames.shape[1:] == (3, 32, 32)
    assert int(episodes.lengths().sum()) + 3 == len(episodes.frames)
    with np.load(files[1]) as x:
        first = int(episodes.starts[1])
        assert np.array_equal(episodes.frames[first].permute(1, 2, 0).numpy(), x["frames"][0])
        assert int(episodes.actions[first].argmax()) == int(x["actions"][0])
        # replaying the recorded actions in the game gives the recorded frames
        frames, _, _ = play(DodgeEnv(size=32, max_steps=40), 5 + 1, x["actions"])
        assert np.array_equal(frames, x["frames"])


def test_random_policy_holds_its_actions():
    env = DodgeEnv()
    policy = RandomPolicy(env.action_space, np.random.default_rng(0), "hold", hold=6)
    actions = [policy() for _ in range(200)]
    changes = sum(a != b for a, b in itertools.pairwise(actions))
    assert 200 / 6 * 0.5 < changes < 200 / 2  # runs of 1..6 steps, mean 3.5 (some repeat)
    assert len(play_episode(env, 0, policy)["frames"]) >= 2
    with pytest.raises(UserError, match="brownian needs continuous actions"):
        RandomPolicy(env.action_space, np.random.default_rng(0), "brownian")


def test_rollouts_command_and_its_bad_input(tmp_path, capsys):
    out = tmp_path / "r"
    result = run_in_process(["rollouts", "episodes=0", f"out={out}"], capsys)
    assert_bad_input(result, "episodes=0")
    result = run_in_process(["rollouts", "env=pong", f"out={out}"], capsys)
    assert_bad_input(result, "unknown environment")
    result = run_in_process(["rollouts", "episodes=2", "max_steps=5", "size=16"], capsys)
    assert_bad_input(result, "out")
    from ganlab import __main__

    __main__.main(["rollouts", "episodes=2", "max_steps=5", "size=16", f"out={out}"])
    assert len(list(out.glob("episode_*.npz"))) == 2
