"""PyBullet Gymnasium environments for sim-to-real perception (the only pybullet user).

``gymnasium.make("sim2real_envs:sim2real/Tabletop-v0", scene=..., width=..., height=...)``.
"""

from gymnasium.envs.registration import register, registry

from sim2real_envs import bullet  # noqa: F401  (first pybullet import, without its stdout banner)
from sim2real_envs.config import SceneConfigError, load_scene

__all__ = ["SceneConfigError", "load_scene"]

_ENVS = {
    "sim2real/Tabletop-v0": "sim2real_envs.tabletop:TabletopEnv",
    "sim2real/PandaTabletop-v0": "sim2real_envs.panda:PandaTabletopEnv",
}
for _id, _entry in _ENVS.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry, max_episode_steps=200)
