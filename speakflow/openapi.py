"""The OpenAPI 3.1 document of the HTTP routes (``GET /openapi.json``).

Generated from the same Structs the server uses (:mod:`speakflow.protocol`),
so the message schemas cannot drift from the code. Apart from the human page
(:mod:`speakflow.docs`): this is a machine's contract, that one prose.
"""

from __future__ import annotations

from typing import Any

from . import protocol as p


def openapi_document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SpeakFlow stream server",
            "version": version,
            "description": "HTTP routes of the SpeakFlow relay. The streaming API is a "
            "WebSocket at /v1/stt/stream, documented at /docs.",
        },
        "paths": {
            "/v1/health": {
                "get": {
                    "summary": "Liveness and load",
                    "responses": {
                        "200": {
                            "description": "The server is up.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status", "active_sessions"],
                                        "properties": {
                                            "status": {"type": "string", "enum": ["ok"]},
                                            "active_sessions": {"type": "integer"},
                                            "active_streams": {"type": "integer"},
                                            "connections": {"type": "integer"},
                                            "provider": {"type": "string"},
                                            "provider_ready": {"type": "boolean"},
                                            "version": {"type": "string"},
                                            "instance_id": {"type": "string"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            },
            **_session_paths(),
            "/": {
                "get": {
                    "summary": "The browser page (microphone capture, past sessions)",
                    "responses": {"200": {"description": "HTML page"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this instance",
                    "responses": {"200": {"description": "Prometheus text format"}},
                }
            },
            "/docs": {
                "get": {
                    "summary": "This documentation as HTML",
                    "responses": {"200": {"description": "HTML page"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This OpenAPI document",
                    "responses": {"200": {"description": "OpenAPI 3.1 JSON"}},
                }
            },
        },
        "components": {
            "schemas": {**p.json_schema_of_messages(), **_SESSION_SCHEMAS},
            "securitySchemes": {
                "userId": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-User-Id",
                    "description": "AUTH_MODE=header: the caller's user id",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "AUTH_MODE=jwt: the token's sub is the caller",
                },
            },
        },
        "webhooks": {
            "sessionEnded": {
                "post": {
                    "summary": "A session ended (TRANSCRIPT_WEBHOOK_URL)",
                    "description": "Sent when a session is stopped or its resume window "
                    "expires. Header X-SpeakFlow-Signature: t=<unix seconds>,v1=<hex "
                    "HMAC-SHA256(TRANSCRIPT_WEBHOOK_SECRET, '<t>.' + body)>; refuse a t more "
                    "than 300 s from your clock. X-SpeakFlow-Delivery is the same on every "
                    "retry of one delivery. Answer 2xx; anything else is retried with backoff.",
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SessionTranscript"}
                            }
                        }
                    },
                    "responses": {"200": {"description": "Received"}},
                }
            }
        },
    }


_ERROR_BODY = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_SESSION_SCHEMAS: dict[str, Any] = {
    "SessionRecord": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "the record's id"},
            "session_id": {"type": "string", "description": "the client's session_id"},
            "user_id": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "ended_at": {"type": ["string", "null"], "format": "date-time"},
            "state": {
                "type": "string",
                "enum": ["live", "resumable", "ended", "interrupted"],
                "description": "interrupted: the server stopped without ending it",
            },
            "end_reason": {
                "type": ["string", "null"],
                "enum": ["stopped", "expired", "shutdown", None],
            },
            "language": {"type": ["string", "null"]},
            "providers": {"type": "array", "items": {"type": "string"}},
            "sources": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "audio_s": {"type": "number"},
                        "first_timestamp": {"type": ["integer", "null"]},
                    },
                },
            },
            "resumes": {"type": "integer"},
            "finals": {"type": "integer"},
        },
    },
    "SessionTranscript": {
        "type": "object",
        "properties": {
            "session": {"$ref": "#/components/schemas/SessionRecord"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "start": {"type": "number", "description": "s on the session clock"},
                        "end": {"type": "number"},
                        "source": {"type": "string"},
                        "speaker": {"type": "string"},
                        "text": {"type": "string"},
                        "source_start": {"type": "number"},
                        "source_end": {"type": "number"},
                        "timestamp": {"type": "integer"},
                        "provider": {"type": "string"},
                        "language": {"type": ["string", "null"]},
                        "confidence": {"type": ["number", "null"]},
                        "words": {"type": ["array", "null"]},
                        "processed": {"type": "boolean"},
                        "raw_text": {"type": "string"},
                    },
                },
            },
        },
    },
}


def _session_paths() -> dict[str, Any]:
    def answer(status: str, what: str, schema: Any = None, media: str = "application/json") -> Any:
        out: dict[str, Any] = {"description": what}
        if schema is not None:
            out["content"] = {media: {"schema": schema}}
        return {status: out}

    security: list[dict[str, list[str]]] = [{"userId": []}, {"bearer": []}]
    errors = {
        **answer("401", "No or refused identity", _ERROR_BODY),
        **answer(
            "404", "No such session of the caller's (also for other users' sessions)", _ERROR_BODY
        ),
        **answer("503", "TRANSCRIPT_STORE=off, or the database is unavailable", _ERROR_BODY),
    }
    key = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "record id, or the client's session_id (the caller's newest with it)",
    }
    record = {"$ref": "#/components/schemas/SessionRecord"}
    return {
        "/v1/sessions": {
            "get": {
                "summary": "The caller's sessions, newest first",
                "security": security,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "next_cursor of the previous page",
                    },
                ],
                "responses": {
                    **answer(
                        "200",
                        "A page of sessions",
                        {
                            "type": "object",
                            "properties": {
                                "sessions": {"type": "array", "items": record},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    **errors,
                },
            }
        },
        "/v1/sessions/{id}": {
            "get": {
                "summary": "One session's metadata",
                "security": security,
                "parameters": [key],
                "responses": {**answer("200", "The session", record), **errors},
            },
            "delete": {
                "summary": "Delete the session's record (metadata and every final)",
                "security": security,
                "parameters": [key],
                "responses": {**answer("204", "Deleted"), **errors},
            },
        },
        "/v1/sessions/{id}/transcript": {
            "get": {
                "summary": "Both sources merged in time order, labelled by speaker",
                "security": security,
                "parameters": [
                    key,
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": ["json", "md", "srt", "vtt", "txt"],
                            "default": "json",
                        },
                    },
                    {
                        "name": "download",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "set: Content-Disposition attachment",
                    },
                ],
                "responses": {
                    **answer(
                        "200", "The transcript", {"$ref": "#/components/schemas/SessionTranscript"}
                    ),
                    **errors,
                },
            }
        },
    }
