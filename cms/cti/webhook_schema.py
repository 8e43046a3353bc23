"""The OpenAPI paths and schemas of webhook subscriptions (merged into `schema.OPENAPI`)."""

from __future__ import annotations

from typing import Any

__all__ = ["SUBSCRIPTION_PATHS", "SUBSCRIPTION_SCHEMAS"]

_ID = r"^[A-Za-z0-9_-]{1,64}$"
_TYPE = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\.?$"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


_ERRORS = {
    "400": _response("BadRequest"),
    "401": _response("Unauthorized"),
    "403": _response("Forbidden"),
}
_SUB_ID = {"name": "id", "in": "path", "required": True, "description": "The subscription's id.",
           "schema": {"type": "string", "pattern": _ID}}

SUBSCRIPTION_PATHS: dict[str, Any] = {
    "/subscriptions": {
        "post": {
            "operationId": "createSubscription",
            "summary": "Subscribe a callback URL to the events (webhook; supervisors and "
                       "API keys only)",
            "description": (
                "The CMS POSTs `{\"subscription\": id, \"events\": [...]}` batches, in seq "
                "order, to `callback_url`; a 2xx answer acknowledges the batch (its position "
                "is stored durably), anything else is retried with capped exponential "
                "back-off and jitter. Delivery is at least once: use `seq` to drop "
                "duplicates. A subscription whose deliveries keep failing ends (state "
                "`ended`) and a `subscription.ended` event is journalled. With a `secret`, "
                "each delivery carries `X-CMS-Signature: sha256=<hex HMAC-SHA256 of the "
                "body>`."
            ),
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("SubscriptionRequest")}}},
            "responses": {"201": _json(_ref("Subscription"), "The new subscription"),
                          "409": _response("Conflict"),
                          "410": _response("Resync"),
                          "422": _response("Invalid"),
                          **_ERRORS},
        },
        "get": {
            "operationId": "listSubscriptions",
            "summary": "Every webhook subscription",
            "responses": {"200": _json(_ref("SubscriptionList"), "Subscriptions"), **_ERRORS},
        },
    },
    "/subscriptions/{id}": {
        "parameters": [_SUB_ID],
        "get": {
            "operationId": "getSubscription",
            "summary": "One subscription, its delivered position and delivery state",
            "responses": {"200": _json(_ref("Subscription"), "The subscription"),
                          "404": _response("NotFound"), **_ERRORS},
        },
        "delete": {
            "operationId": "deleteSubscription",
            "summary": "Stop and forget a subscription",
            "responses": {"204": {"description": "Deleted"},
                          "404": _response("NotFound"), **_ERRORS},
        },
    },
}

SUBSCRIPTION_SCHEMAS: dict[str, Any] = {
    "SubscriptionRequest": {
        "type": "object",
        "required": ["callback_url"],
        "additionalProperties": False,
        "properties": {
            "callback_url": {"type": "string", "minLength": 8, "maxLength": 2048,
                             "pattern": r"^[hH][tT][tT][pP][sS]?://",
                             "description": "An http or https URL."},
            "types": {"type": "array", "maxItems": 64,
                      "items": {"type": "string", "minLength": 1, "maxLength": 64,
                                "pattern": _TYPE},
                      "description": "Event types, or prefixes ending in a dot (\"call.\"); "
                                     "absent or empty: every event."},
            "after": {"type": "integer", "minimum": 0,
                      "description": "Deliver the events after this seq; absent: from now on."},
            "secret": {"type": "string", "minLength": 1, "maxLength": 256,
                       "description": "Key for the X-CMS-Signature HMAC; never returned."},
        },
    },
    "Subscription": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "callback_url": {"type": "string"},
            "types": {"type": "array", "items": {"type": "string"}},
            "after": {"type": "integer",
                      "description": "The last seq acknowledged: delivery goes on after it."},
            "state": {"type": "string", "enum": ["active", "ended"]},
            "reason": {"type": "string", "description": "Why it ended."},
            "signed": {"type": "boolean"},
            "owner": {"type": "string"},
            "created": {"type": "string", "format": "date-time"},
            "failures": {"type": "integer",
                         "description": "Failed attempts since the last acknowledged batch."},
            "last_error": {"type": ["string", "null"]},
        },
    },
    "SubscriptionList": {
        "type": "object",
        "properties": {"subscriptions": {"type": "array", "items": _ref("Subscription")}},
    },
}
