-- wrk script: polls the waiting line with each ticket of the file given after `--` in turn,
-- so no ticket is polled twice within a second at the rates callgrind runs at.
local tickets = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do tickets[#tickets + 1] = line end
end
function request()
  i = i % #tickets + 1
  return wrk.format("GET", nil, { ["Cookie"] = "seatgate_queue=" .. tickets[i] })
end
-- One connection, 2 ms between polls: at most 500 a second, so each of 1,000 tickets waits
-- about 2 s between its polls (callgrind alone serves ~1,500 a second).
function delay()
  return 2
end
