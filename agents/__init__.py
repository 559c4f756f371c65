"""The learning side: networks, TD targets and losses, exploration, the agent, and replay."""

from agents.agent import DQNAgent, build_network
from agents.config import AgentConfig

__all__ = ["AgentConfig", "DQNAgent", "build_network"]
