"""The voice-bot flow: VoiceAI Connect's speaker-verification events, served natively.

``activities`` reads and writes the reference's JSON, ``config`` resolves parameters and configuration
sets, ``operations`` runs status / enroll / verify / delete, ``sessions`` ties a bot's activities to its
call and its events to its door. The doors (``voxgate.api.websocket``, ``voxgate.api.routers.bots``) only
carry the JSON.
"""

from voxgate.service.bots.activities import Activity, ActivityError, is_activity_message, parse
from voxgate.service.bots.config import BadParameter, ConfigSet, load_sets
from voxgate.service.bots.sessions import BotSession, BotSessions, Mailbox

__all__ = [
    "Activity",
    "ActivityError",
    "BadParameter",
    "BotSession",
    "BotSessions",
    "ConfigSet",
    "Mailbox",
    "is_activity_message",
    "load_sets",
    "parse",
]
