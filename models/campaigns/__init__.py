"""Admin campaigns: scheduled interventions for a targeted set of users, evaluated per user.

Modules (import each name from the module that defines it; nothing is re-exported here):
  * `records`: the records (`Campaign`, `Schedule`, `Target`, `UserFacts`, `Occurrence`), their
    storage form and the shared vocabulary (kinds, statuses, filter fields and ops).
  * `errors`: `InvalidCampaign`, naming the field a body or status change is refused for.
  * `parsing`: an admin's JSON body into a `Campaign` (`parse_campaign`), and the body's limits.
  * `status`: status changes (`with_status`), the derived "completed" (`effective_status`) and the
    API's view (`public_campaign`).
  * `targeting`: whether a user is in a campaign's audience (`targets`).
  * `occurrences`: when a campaign fires for a user (`occurrences`, `next_occurrence`, `due`,
    `next_due`): kinds, stream time, idempotency keys and DST.
  * `execution`: the execution log (`CampaignRun`), outcomes counted across users.

Everything here is pure: no I/O and no clock (every instant is an argument).
"""
