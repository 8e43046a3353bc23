"""The CTI API's OpenAPI 3.1 document: served as is, and the source of request validation.

The router is built from `paths` (every operation's `operationId` names its
handler), query, path and header parameters are coerced and checked against
their schemas, and JSON bodies against `requestBody`: the document cannot
drift from the server.
"""

from __future__ import annotations

from typing import Any

from .webhook_schema import SUBSCRIPTION_PATHS, SUBSCRIPTION_SCHEMAS

__all__ = ["API_VERSION", "OPENAPI", "SNAPSHOTS"]

API_VERSION = "1.0.0"

SNAPSHOTS = ("/api/v1/agents", "/api/v1/queues", "/api/v1/presence")
"""Where a client that must resync rebuilds its view."""

NAME = r"^[A-Za-z0-9._@+-]{1,64}$"
TARGET = r"^[A-Za-z0-9._@+*#-]{1,64}$"

_ERROR_RESPONSES = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _user_param() -> dict[str, Any]:
    return {"name": "user", "in": "path", "required": True,
            "description": "The agent's user name (the CRM user name).",
            "schema": {"type": "string", "pattern": NAME}}


_AFTER = {"name": "after", "in": "query", "required": False,
          "description": "Deliver the events with a seq greater than this; absent: from now on.",
          "schema": {"type": "integer", "minimum": 0}}
_HEARTBEAT = {"name": "heartbeat", "in": "query", "required": False,
              "description": "Seconds between heartbeats on an idle channel (default 15).",
              "schema": {"type": "number", "minimum": 0.05, "maximum": 300}}
_TOKEN = {"name": "token", "in": "query", "required": False,
          "description": "The bearer token, for browsers that cannot set headers "
                         "(WebSocket, EventSource).",
          "schema": {"type": "string", "maxLength": 200}}

_AGENT_ERRORS = {
    **_ERROR_RESPONSES,
    "403": {"$ref": "#/components/responses/Forbidden"},
    "404": {"$ref": "#/components/responses/NotFound"},
}

def _body(schema_name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema_name)}}}


_CALL_ID = {"name": "id", "in": "path", "required": True, "description": "The call's id.",
            "schema": {"type": "string", "pattern": NAME}}
_CALL_ERRORS = {
    **_AGENT_ERRORS,
    "409": {"$ref": "#/components/responses/Conflict"},
    "422": {"$ref": "#/components/responses/Invalid"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}


def _call_command(operation_id: str, summary: str, body: str | None = None,
                  result: str = "Call") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {"200": _json(_ref(result), "Done; the call as it is now"), **_CALL_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return {"parameters": [_CALL_ID], "post": operation}


CALL_PATHS: dict[str, Any] = {
    "/calls": {
        "get": {
            "operationId": "listCalls",
            "summary": "Live calls (an agent sees only the calls it takes part in)",
            "responses": {"200": _json(_ref("CallList"), "Calls"), **_ERROR_RESPONSES,
                          "503": {"$ref": "#/components/responses/Unavailable"}},
        },
        "post": {
            "operationId": "makeCall",
            "summary": "Click-to-dial: ring the agent's device, then call `to`",
            "requestBody": _body("MakeCallRequest"),
            "responses": {"201": _json(_ref("Call"), "The call being placed"), **_CALL_ERRORS},
        },
    },
    "/calls/{id}": {
        "parameters": [_CALL_ID],
        "get": {
            "operationId": "getCall",
            "summary": "One live call",
            "responses": {"200": _json(_ref("Call"), "The call"), **_CALL_ERRORS},
        },
    },
    "/calls/{id}/answer": _call_command("answerCall", "Answer a call ringing at the device"),
    "/calls/{id}/reject": _call_command("rejectCall", "Decline a call ringing at the device"),
    "/calls/{id}/hold": _call_command("holdCall", "Put the other party on hold"),
    "/calls/{id}/retrieve": _call_command("retrieveCall", "Take the held party back"),
    "/calls/{id}/hangup": _call_command("hangupCall", "End the call (or leave a conference)"),
    "/calls/{id}/transfer": _call_command("transferCall", "Blind or consult transfer to `to`",
                                          "TransferRequest"),
    "/calls/{id}/consult": _call_command("consultCall",
                                         "Hold the other party and call `to`; returns the "
                                         "consult call", "ConsultRequest"),
    "/calls/{id}/complete": _call_command("completeCall",
                                          "Join the held party with the consulted one",
                                          "CompleteRequest"),
    "/calls/{id}/dtmf": _call_command("sendDtmf", "Send RFC 4733 digits to the other party",
                                      "DtmfRequest"),
    "/calls/{id}/attached_data": {
        "parameters": [_CALL_ID],
        "get": {
            "operationId": "getAttachedData",
            "summary": "The call's attached data",
            "responses": {"200": _json(_ref("AttachedData"), "Attached data"), **_CALL_ERRORS},
        },
        "patch": {
            "operationId": "patchAttachedData",
            "summary": "Change attached data by JSON merge patch (RFC 7396: null deletes)",
            "requestBody": _body("AttachedData"),
            "responses": {"200": _json(_ref("AttachedData"), "The new attached data"),
                          **_CALL_ERRORS},
        },
    },
}

_INTERACTION_ID = {"name": "id", "in": "path", "required": True,
                   "description": "The interaction's id (the call's id).",
                   "schema": {"type": "string", "pattern": NAME}}
_SEQ_PARAM = {"type": "integer", "minimum": 0, "maximum": 2**53}
_SUPERVISOR_ERRORS = {**_AGENT_ERRORS, "422": {"$ref": "#/components/responses/Invalid"},
                      "503": {"$ref": "#/components/responses/Unavailable"}}

RECORD_PATHS: dict[str, Any] = {
    "/interactions": {
        "get": {
            "operationId": "listInteractions",
            "summary": "The interaction log (an agent sees only its own)",
            "description": "With `after`: the records created after that cursor, oldest "
                           "first. Without: the newest first (before `before`, if given). "
                           "`next` is the cursor to pass on.",
            "parameters": [
                {"name": "after", "in": "query", "required": False, "schema": _SEQ_PARAM},
                {"name": "before", "in": "query", "required": False, "schema": _SEQ_PARAM},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "agent", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": NAME}},
                {"name": "queue", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": NAME}},
            ],
            "responses": {"200": _json(_ref("InteractionPage"), "Interactions"),
                          "403": {"$ref": "#/components/responses/Forbidden"},
                          "503": {"$ref": "#/components/responses/Unavailable"},
                          **_ERROR_RESPONSES},
        },
    },
    "/interactions/{id}": {
        "parameters": [_INTERACTION_ID],
        "get": {
            "operationId": "getInteraction",
            "summary": "One interaction",
            "responses": {"200": _json(_ref("Interaction"), "The interaction"),
                          "503": {"$ref": "#/components/responses/Unavailable"},
                          **_AGENT_ERRORS},
        },
        "patch": {
            "operationId": "updateInteraction",
            "summary": "Set the wrap-up reason",
            "description": "Journalled as `interaction.updated`; answered once committed. "
                           "An agent leaving wrap_up with a reason sets it too.",
            "requestBody": _body("InteractionUpdate"),
            "responses": {"200": _json(_ref("Interaction"), "The interaction"),
                          "422": {"$ref": "#/components/responses/Invalid"},
                          "503": {"$ref": "#/components/responses/Unavailable"},
                          **_AGENT_ERRORS},
        },
    },
    "/broadcasts": {
        "post": {
            "operationId": "createBroadcast",
            "description": "Journalled as `broadcast` (seen by its `recipients`); each "
                           "phone's final answer to the MESSAGE follows as a "
                           "`message.delivered` event.",
            "summary": "A text to a queue's members (or every agent): event and SIP MESSAGE",
            "requestBody": _body("BroadcastRequest"),
            "responses": {"201": _json(_ref("MessageReport"), "Sent; outcome per recipient"),
                          **_SUPERVISOR_ERRORS},
        },
    },
    "/alerts": {
        "post": {
            "operationId": "createAlert",
            "description": "Journalled as `alert` (seen by its `user`), then "
                           "`message.delivered`.",
            "summary": "A text to one agent: event and SIP MESSAGE",
            "requestBody": _body("AlertRequest"),
            "responses": {"201": _json(_ref("MessageReport"), "Sent; outcome"),
                          **_SUPERVISOR_ERRORS},
        },
    },
}

_TEXT = {"type": "string", "minLength": 1, "maxLength": 1000}

RECORD_SCHEMAS: dict[str, Any] = {
    "Interaction": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "seq": {"type": "integer", "description": "Journal seq of its creation (cursor)."},
            "kind": {"type": "string"},
            "direction": {"type": "string"},
            "caller": {"type": "string"},
            "caller_e164": {"type": ["string", "null"],
                            "description": "The outside party in E.164, where known."},
            "target": {"type": "string"},
            "business_partner": {"type": ["string", "null"]},
            "agent": {"type": "string"},
            "queue": {"type": "string"},
            "created": {"type": "string", "format": "date-time"},
            "answered": {"type": ["string", "null"], "format": "date-time"},
            "ended": {"type": ["string", "null"], "format": "date-time"},
            "outcome": {"type": ["string", "null"]},
            "wrap_up_reason": {"type": ["string", "null"]},
            "attached_data": {"type": "object"},
            "updated_seq": {"type": "integer"},
        },
    },
    "InteractionPage": {
        "type": "object",
        "properties": {"interactions": {"type": "array", "items": _ref("Interaction")},
                       "next": {"type": "integer"}},
    },
    "InteractionUpdate": {
        "type": "object",
        "required": ["wrap_up_reason"],
        "additionalProperties": False,
        "properties": {"wrap_up_reason": {"type": "string", "minLength": 1, "maxLength": 64}},
    },
    "BroadcastRequest": {
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {"text": _TEXT,
                       "to": {"type": "string", "pattern": NAME,
                              "description": "A queue (name or number); absent: every agent."}},
    },
    "AlertRequest": {
        "type": "object",
        "required": ["user", "text"],
        "additionalProperties": False,
        "properties": {"user": {"type": "string", "pattern": NAME}, "text": _TEXT},
    },
    "MessageReport": {
        "type": "object",
        "properties": {
            "message_id": {"type": "string"},
            "seq": {"type": "integer"},
            "recipients": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "user": {"type": "string"},
                    "device": {"type": "string"},
                    "status": {"type": "string", "enum": [
                        "accepted", "rejected", "timeout", "no_device", "pending", "failed"]},
                    "sip_status": {"type": ["integer", "null"]},
                },
            }},
        },
    },
}

_TARGET = {"type": "string", "pattern": TARGET,
           "description": "An extension, a user name, a queue name or number, or an "
                          "outside number."}

CALL_SCHEMAS: dict[str, Any] = {
    "Party": {
        "type": "object",
        "properties": {"role": {"type": "string"}, "number": {"type": "string"},
                       "user": {"type": "string"}, "state": {"type": "string"}},
    },
    "Call": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "direction": {"type": "string"},
            "state": {"type": "string"},
            "caller": {"type": "string"},
            "target": {"type": "string"},
            "queue": {"type": "string"},
            "agent": {"type": "string"},
            "created": {"type": ["string", "null"], "format": "date-time"},
            "answered": {"type": ["string", "null"], "format": "date-time"},
            "users": {"type": "array", "items": {"type": "string"}},
            "parties": {"type": "array", "items": _ref("Party")},
            "attached_data": {"type": "object"},
            "related": {"type": "string"},
            "seq": {"type": "integer"},
        },
    },
    "CallList": {
        "type": "object",
        "properties": {"seq": {"type": "integer"},
                       "calls": {"type": "array", "items": _ref("Call")}},
    },
    "MakeCallRequest": {
        "type": "object",
        "required": ["to"],
        "additionalProperties": False,
        "properties": {
            "to": _TARGET,
            "attached_data": _ref("AttachedData"),
            "user": {"type": "string", "pattern": NAME,
                     "description": "Whose device dials (supervisors and API keys only; "
                                    "an agent always dials from its own)."},
        },
    },
    "TransferRequest": {
        "type": "object",
        "required": ["to"],
        "additionalProperties": False,
        "properties": {"to": _TARGET,
                       "mode": {"type": "string", "enum": ["blind", "consult"],
                                "default": "blind"}},
    },
    "ConsultRequest": {
        "type": "object",
        "required": ["to"],
        "additionalProperties": False,
        "properties": {"to": _TARGET},
    },
    "CompleteRequest": {
        "type": "object",
        "required": ["consult_id", "as"],
        "additionalProperties": False,
        "properties": {"consult_id": {"type": "string", "pattern": NAME},
                       "as": {"type": "string", "enum": ["transfer", "conference"]}},
    },
    "DtmfRequest": {
        "type": "object",
        "required": ["digits"],
        "additionalProperties": False,
        "properties": {"digits": {"type": "string", "pattern": "^[0-9*#A-D]{1,32}$"}},
    },
    "AttachedData": {
        "type": "object",
        "maxProperties": 100,
        "description": "Free-form JSON the CRM attaches to a call (e.g. business_partner).",
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "SIP CMS emulator CTI API",
        "version": API_VERSION,
        "description": (
            "Third-party CTI of the CMS: sessions, agent log on / log off and states, "
            "queue and presence snapshots, and one ordered event journal delivered by "
            "polling, WebSocket and server-sent events. Every event is "
            "`{seq, time, type, ...}` with a strictly increasing `seq`; resuming after "
            "a `seq` delivers exactly the events after it, also across a restart. "
            "Errors are `{\"error\": {\"code\", \"message\"}}` with a 4xx status."
        ),
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}, {"apiKey": []}],
    "paths": {
        "/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness and basic counters",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The server is up")},
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
            },
        },
        "/sessions": {
            "post": {
                "operationId": "createSession",
                "summary": "Log in: user and password give a bearer token",
                "security": [],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("Credentials")}}},
                "responses": {
                    "201": _json(_ref("Session"), "A new session"),
                    **_ERROR_RESPONSES,
                },
            },
            "get": {
                "operationId": "getSession",
                "summary": "Who the token belongs to",
                "responses": {"200": _json(_ref("Session"), "The current session"),
                              **_ERROR_RESPONSES},
            },
            "delete": {
                "operationId": "deleteSession",
                "summary": "Log out: revoke the token",
                "responses": {"204": {"description": "Revoked"}, **_ERROR_RESPONSES},
            },
        },
        "/agents": {
            "get": {
                "operationId": "listAgents",
                "summary": "Agents and their states (an agent sees only itself)",
                "responses": {"200": _json(_ref("AgentList"), "Agent snapshot"),
                              **_ERROR_RESPONSES},
            },
        },
        "/agents/{user}": {
            "parameters": [_user_param()],
            "get": {
                "operationId": "getAgent",
                "summary": "One agent",
                "responses": {"200": _json(_ref("Agent"), "The agent"), **_AGENT_ERRORS},
            },
        },
        "/agents/{user}/logon": {
            "parameters": [_user_param()],
            "post": {
                "operationId": "logonAgent",
                "summary": "Log an agent on at its own phone or a work centre (free seating)",
                "requestBody": {"required": False, "content": {
                    "application/json": {"schema": _ref("LogonRequest")}}},
                "responses": {"200": _json(_ref("Agent"), "Logged on"),
                              "409": {"$ref": "#/components/responses/Conflict"},
                              "422": {"$ref": "#/components/responses/Invalid"},
                              **_AGENT_ERRORS},
            },
        },
        "/agents/{user}/logoff": {
            "parameters": [_user_param()],
            "post": {
                "operationId": "logoffAgent",
                "summary": "Log an agent off (after its current call, if on one)",
                "responses": {"200": _json(_ref("Agent"), "Logged off (or pending)"),
                              **_AGENT_ERRORS},
            },
        },
        "/agents/{user}/state": {
            "parameters": [_user_param()],
            "put": {
                "operationId": "setAgentState",
                "summary": "Ready, not ready (with a reason code) or wrap-up",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("StateRequest")}}},
                "responses": {"200": _json(_ref("Agent"), "State set (or pending)"),
                              "409": {"$ref": "#/components/responses/Conflict"},
                              "422": {"$ref": "#/components/responses/Invalid"},
                              **_AGENT_ERRORS},
            },
        },
        "/queues": {
            "get": {
                "operationId": "listQueues",
                "summary": "Queue snapshot: waiting callers, longest wait, agents by state",
                "responses": {"200": _json(_ref("QueueList"), "Queues"), **_ERROR_RESPONSES},
            },
        },
        "/queues/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "description": "Queue name or number.",
                            "schema": {"type": "string", "pattern": NAME}}],
            "get": {
                "operationId": "getQueue",
                "summary": "One queue, by name or number",
                "responses": {"200": _json(_ref("Queue"), "The queue"),
                              "404": {"$ref": "#/components/responses/NotFound"},
                              **_ERROR_RESPONSES},
            },
        },
        "/presence": {
            "get": {
                "operationId": "listPresence",
                "summary": "Presence of every user",
                "responses": {"200": _json(_ref("PresenceList"), "Presence"),
                              **_ERROR_RESPONSES},
            },
        },
        "/events": {
            "get": {
                "operationId": "pollEvents",
                "summary": "Poll (or long-poll with `wait`) the events after a seq",
                "parameters": [
                    _AFTER,
                    {"name": "wait", "in": "query", "required": False,
                     "description": "Seconds to wait for an event when there is none yet.",
                     "schema": {"type": "number", "minimum": 0, "maximum": 60}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ],
                "responses": {
                    "200": _json(_ref("EventPage"), "Events (maybe none) and the next cursor"),
                    "410": {"$ref": "#/components/responses/Resync"},
                    **_ERROR_RESPONSES,
                },
            },
        },
        "/events/ws": {
            "get": {
                "operationId": "eventsWebSocket",
                "summary": "WebSocket push: one event per text message",
                "description": (
                    "Each text message is an event. `{\"type\": \"heartbeat\"}` (no seq) "
                    "arrives when idle; `{\"type\": \"resync\", ...}` (no seq) followed by "
                    "close code 4410 tells a client it must rebuild from the snapshots."
                ),
                "security": [{"bearer": []}, {"apiKey": []}, {"token": []}],
                "parameters": [_AFTER, _HEARTBEAT, _TOKEN],
                "responses": {"101": {"description": "Switching to WebSocket"},
                              "426": {"$ref": "#/components/responses/BadRequest"},
                              **_ERROR_RESPONSES},
            },
        },
        "/events/sse": {
            "get": {
                "operationId": "eventsSse",
                "summary": "Server-sent events: `id:` is the seq, `data:` the event",
                "description": (
                    "Resumes after `Last-Event-ID` (or `after`). Idle channels get "
                    "`event: heartbeat`; `event: resync` ends the stream when the client "
                    "must rebuild from the snapshots."
                ),
                "security": [{"bearer": []}, {"apiKey": []}, {"token": []}],
                "parameters": [
                    _AFTER, _HEARTBEAT, _TOKEN,
                    {"name": "Last-Event-ID", "in": "header", "required": False,
                     "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {"200": {"description": "An event stream",
                                      "content": {"text/event-stream": {}}},
                              **_ERROR_RESPONSES},
            },
        },
        **CALL_PATHS,
        **RECORD_PATHS,
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "A token from POST /sessions."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                       "description": "A CRM server integration key from the configuration."},
            "token": {"type": "apiKey", "in": "query", "name": "token"},
        },
        "responses": {
            "BadRequest": _json(_ref("Error"), "Malformed request (bad JSON or parameter)"),
            "Unauthorized": _json(_ref("Error"), "No valid token or key"),
            "Forbidden": _json(_ref("Error"), "Not allowed for this role"),
            "NotFound": _json(_ref("Error"), "No such user, queue or resource"),
            "Conflict": _json(_ref("Error"), "Refused in the current state"),
            "Invalid": _json(_ref("Error"), "The body does not match the schema"),
            "Resync": _json(_ref("Error"),
                            "The position is not in the journal: rebuild from the snapshots"),
            "Unavailable": _json(_ref("Error"), "Call control is not available"),
        },
        "schemas": {
            **CALL_SCHEMAS,
            **RECORD_SCHEMAS,
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "resync": _ref("Resync"),
                    },
                }},
            },
            "Resync": {
                "type": "object",
                "properties": {
                    "first_seq": {"type": "integer"},
                    "last_seq": {"type": "integer"},
                    "snapshots": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Credentials": {
                "type": "object",
                "required": ["user", "password"],
                "additionalProperties": False,
                "properties": {
                    "user": {"type": "string", "minLength": 1, "maxLength": 64},
                    "password": {"type": "string", "minLength": 1, "maxLength": 256},
                },
            },
            "Session": {
                "type": "object",
                "properties": {
                    "token": {"type": "string"},
                    "user": {"type": "string"},
                    "role": {"type": "string", "enum": ["agent", "supervisor", "integration"]},
                    "expires": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "LogonRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "device": {"type": "string", "pattern": NAME,
                               "description": "Own extension or a work centre (name or "
                                              "extension); absent: the agent's own phone."},
                },
            },
            "StateRequest": {
                "type": "object",
                "required": ["state"],
                "additionalProperties": False,
                "properties": {
                    "state": {"type": "string", "enum": ["ready", "not_ready", "wrap_up"]},
                    "reason": {"type": "string", "maxLength": 64},
                },
            },
            "Agent": {
                "type": "object",
                "properties": {
                    "user": {"type": "string"},
                    "state": {"type": "string", "enum": ["logged_off", "ready", "not_ready",
                                                         "ringing", "on_call", "wrap_up"]},
                    "reason": {"type": "string"},
                    "presence": {"type": "string"},
                    "since": {"type": ["string", "null"], "format": "date-time"},
                    "device": {"type": ["string", "null"]},
                    "queues": {"type": "array", "items": {"type": "string"}},
                    "offer": {"type": ["string", "null"]},
                    "calls": {"type": "array", "items": {"type": "string"}},
                    "calls_taken": {"type": "integer"},
                    "seq": {"type": "integer",
                            "description": "The journal position this snapshot reflects."},
                },
            },
            "AgentList": {
                "type": "object",
                "properties": {"seq": {"type": "integer"},
                               "agents": {"type": "array", "items": _ref("Agent")}},
            },
            "Queue": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "number": {"type": "string"},
                    "strategy": {"type": "string"},
                    "waiting": {"type": "integer"},
                    "longest_wait": {"type": "number"},
                    "agents": {"type": "object",
                               "additionalProperties": {"type": "integer"},
                               "description": "Member count by agent state."},
                    "members": {"type": "array", "items": {"type": "object"}},
                    "callers": {"type": "array", "items": {"type": "object"}},
                    "seq": {"type": "integer"},
                },
            },
            "QueueList": {
                "type": "object",
                "properties": {"seq": {"type": "integer"},
                               "queues": {"type": "array", "items": _ref("Queue")}},
            },
            "PresenceList": {
                "type": "object",
                "properties": {
                    "seq": {"type": "integer"},
                    "presence": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"user": {"type": "string"},
                                       "presence": {"type": "string"}},
                    }},
                },
            },
            "Event": {
                "type": "object",
                "required": ["seq", "time", "type"],
                "properties": {
                    "seq": {"type": "integer", "minimum": 1},
                    "time": {"type": "string", "format": "date-time"},
                    "type": {"type": "string"},
                },
                "additionalProperties": True,
            },
            "EventPage": {
                "type": "object",
                "properties": {
                    "events": {"type": "array", "items": _ref("Event")},
                    "next": {"type": "integer",
                             "description": "Pass as `after` next time (it may pass events "
                                            "this role does not see)."},
                },
            },
        },
    },
}

OPENAPI["paths"].update(SUBSCRIPTION_PATHS)
OPENAPI["components"]["schemas"].update(SUBSCRIPTION_SCHEMAS)
