"""Admin campaigns: scheduled interventions for a targeted set of users, evaluated per user.

Modules (import each name from the module that defines it; nothing is re-exported here):
  * `records`: the records (`Campaign`, `Schedule`, `DripStep`, `Target`, `ManualSend`,
    `UserFacts`, `Occurrence`), their storage form and the shared vocabulary (kinds, statuses,
    weekday names, filter fields and ops).
  * `errors`: `InvalidCampaign`, naming the field a body or status change is refused for, and
    `CampaignConflict` when the campaign's state refuses it.
  * `parsing`: an admin's JSON body into a `Campaign` (`parse_campaign`), the body's limits, and
    whether the templates it names exist for its types (`check_templates`).
  * `status`: status changes (`with_status`), the derived "completed" (`effective_status`) and the
    API's view (`public_campaign`).
  * `changes`: editing (`edit`), copying (`duplicate`) and deleting (`deleted_marker`) a campaign.
  * `sends`: an admin's "send now" to one student or a filtered set (`parse_send`, `add_send`).
  * `targeting`: whether a user is in a campaign's audience (`targets`).
  * `occurrences`: when a campaign fires for a user (`occurrences`, `next_occurrence`, `due`,
    `next_due`, `sends_due`) and its next run (`next_run`): kinds, stream time, idempotency keys
    and DST.
  * `execution`: the execution log (`CampaignRun`): outcomes counted across users, the funnel of
    its notifications and the log of its recent runs.

Everything here is pure: no I/O and no clock (every instant is an argument).
"""
