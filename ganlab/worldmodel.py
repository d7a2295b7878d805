"""`python -m ganlab worldmodel`: World Models end to end, each stage a ganlab run of its own.

    python -m ganlab worldmodel env=dodge episodes=200 out=outputs/wm [in_dream=true]
        [vae.trainer.max_steps=2000 mdnrnn.model.hidden=64 controller.trainer.max_steps=50 ...]

1. random-policy rollouts -> OUT/rollouts (or rollouts=DIR, recorded before);
2. `train model=worldmodel model.stage=vae` -> OUT/vae;
3. `train ... model.stage=mdnrnn model.vae_run=OUT/vae` -> OUT/mdnrnn;
4. `train ... model.stage=controller model.mdnrnn_run=OUT/mdnrnn [model.in_dream=true]`
   -> OUT/controller (OUT/controller_dream in the dream).
`vae.`, `mdnrnn.` and `controller.` prefixed key=value pairs go to that stage's train command
(`vae.trainer.max_steps=500` -> `trainer.max_steps=500`), unprefixed train overrides (device=cpu,
trainer.seed=1) to all three. A stage whose run dir already holds metrics.json is kept as it is:
the command continues where it stopped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ganlab.errors import UserError

STAGE_PREFIXES = ("vae.", "mdnrnn.", "controller.")
OWN_KEYS = ("env", "episodes", "out", "rollouts", "in_dream", "seed", "size", "max_steps")


def parse(args: list[str]) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    own: dict[str, str] = {"env": "dodge", "episodes": "200", "in_dream": "false", "seed": "0",
                           "size": "64", "max_steps": "300"}
    stages: dict[str, list[str]] = {p[:-1]: [] for p in STAGE_PREFIXES}
    shared: list[str] = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"worldmodel takes key=value arguments, got {arg!r}")
        prefix = next((p for p in STAGE_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            stages[prefix[:-1]].append(f"{key[len(prefix):]}={value}")
        elif key in OWN_KEYS:
            own[key] = value
        else:
            shared.append(arg)
    if "out" not in own:
        raise UserError("worldmodel needs out=DIR (the folder of its rollouts and three runs)")
    if own["in_dream"] not in ("true", "false"):
        raise UserError(f"in_dream={own['in_dream']} must be true or false")
    return own, stages, shared


def train(args: list[str]) -> None:
    print("+ python -m ganlab train " + " ".join(args), flush=True)
    code = subprocess.run([sys.executable, "-m", "ganlab", "train", *args], check=False).returncode
    if code:
        raise SystemExit(code)


def main(args: list[str]) -> None:
    from ganlab.envs import make_env
    from ganlab.envs.rollouts import META, record

    own, stages, shared = parse(args)
    out = Path(own["out"])
    make_env(own["env"], int(own["size"]), int(own["max_steps"]))  # unknown: said now
    rollouts = Path(own.get("rollouts") or out / "rollouts")
    if not (rollouts / META).is_file():
        if "rollouts" in own:
            raise UserError(f"rollouts={rollouts} holds no rollouts ({META} missing)")
        record(own["env"], int(own["episodes"]), int(own["seed"]), int(own["size"]),
               int(own["max_steps"]), out=rollouts)
    common = ["model=worldmodel", f"dataset.path={rollouts.resolve()}", *shared]
    runs = {"vae": out / "vae", "mdnrnn": out / "mdnrnn",
            "controller": out / ("controller_dream" if own["in_dream"] == "true"
                                 else "controller")}
    inputs = {"vae": [], "mdnrnn": [f"model.vae_run={runs['vae'].resolve()}"],
              "controller": [f"model.mdnrnn_run={runs['mdnrnn'].resolve()}",
                             f"model.in_dream={own['in_dream']}"]}
    for stage, run in runs.items():
        if (run / "metrics.json").is_file():
            print(f"{stage}: {run} is trained already; kept", flush=True)
            continue
        resume = ["resume=auto"] if (run / "checkpoints").is_dir() else []
        train([*common, f"model.stage={stage}", *inputs[stage], *stages[stage],
               f"hydra.run.dir={run.resolve()}", *resume])
    print(f"world model runs in {out}: " + ", ".join(str(r) for r in runs.values()))
