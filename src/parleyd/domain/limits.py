"""Documented limits on what a caller may send. The proto comments quote these numbers."""

from __future__ import annotations

ID_FIELD_MAX_CHARS = 128  # agent_id, user_id, profile, avatar_id, speaker_id, request_id
SITUATION_MAX_WORDS = 2_500
SITUATION_MAX_CHARS = 32_768
DYNAMIC_INFO_MAX_CHARS = 4_096
SCENE_MAX_ITEMS = 64
SCENE_NAME_MAX_CHARS = 128
SCENE_DESCRIPTION_MAX_CHARS = 1_024
METADATA_MAX_PAIRS = 64
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512
RESUME_WINDOW_MIN_MS = 1_000
RESUME_WINDOW_MAX_MS = 7 * 24 * 3600 * 1000

SESSIONS_PAGE_DEFAULT = 20
SESSIONS_PAGE_MAX = 100
MESSAGES_PAGE_DEFAULT = 100
MESSAGES_PAGE_MAX = 500

# Interact: what one participant may send on its stream.
TEXT_MAX_CHARS = 4_096  # text, reply_text, transcripts
TRIGGER_NAME_MAX_CHARS = 64
TRIGGER_PAYLOAD_MAX_BYTES = 4_096
INTERACTION_ID_MAX_CHARS = 64
AUDIO_RATE_MIN_HZ = 8_000
AUDIO_RATE_MAX_HZ = 48_000
AUDIO_RATE_DEFAULT_HZ = 16_000
AUDIO_CHUNK_MIN_MS = 10
AUDIO_CHUNK_MAX_MS = 100
AUDIO_CHUNK_DEFAULT_MS = 20
# A participant that declared no chunk length (the built-in engine) may send up to this much audio
# in one chunk.
AUDIO_CHUNK_HARD_MAX_MS = 1_000
CLIENT_NAME_MAX_CHARS = 128
CLIENT_VERSION_MAX_CHARS = 64

# Receive limits of every call (issue: hostile input). The proto comments quote them.
MESSAGE_MAX_BYTES = 4 * 1024 * 1024  # one request message, any RPC (gRPC max receive size)
# Frames one Interact stream may send per second, averaged over a 1 s window with a burst of as
# many again: 10 ms audio is 100 frames/s, leaving room for marks, text and reply frames.
INTERACT_FRAMES_PER_SECOND_MAX = 250
INTERACT_FRAMES_BURST = 250

# Sizes of what a caller can make the server produce or keep.
SITUATION_MAX_BYTES = 64 * 1024  # situation as written, UTF-8
RENDERED_SITUATION_MAX_BYTES = 64 * 1024  # the situation after templates, UTF-8
TEMPLATE_LOOP_ITERATIONS_MAX = 1_000  # every loop of one render together
TEMPLATE_RENDER_BUDGET_MS = 50  # wall time one render may take
TEMPLATE_TOKENS_MAX = 500  # names, operators, constants, tags and runs of text of one template
TEMPLATE_NESTING_MAX = 24  # depth of its syntax tree
TEMPLATE_FILTER_CHAIN_MAX = 4  # filters applied one after another
UPDATE_MASK_PATHS_MAX = 32
# Error details: at most this many field violations are listed (then a count of the rest), and no
# error's details exceed ERROR_DETAILS_MAX_BYTES, so every client's default 8 KiB metadata limit
# holds the whole error.
FIELD_VIOLATIONS_REPORTED_MAX = 20
FIELD_VIOLATION_TEXT_MAX_CHARS = 200
ERROR_DETAILS_MAX_BYTES = 4 * 1024
