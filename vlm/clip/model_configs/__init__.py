"""open_clip model configs (JSON) shipped with reportkd; registered by ``reportkd.vlm.clip.models``."""
