"""The simulated Vast.ai cloud: Vast API, ComfyUI stand-ins, SSH, HuggingFace/Civitai checks, faults.

Start it with ``vastkeep simulate`` / ``python -m vastkeep.sim``; drive it from tests with
:class:`vastkeep.sim.control.SimControl`.
"""
