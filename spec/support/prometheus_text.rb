# frozen_string_literal: true

# A strict parser of the Prometheus text exposition format (version 0.0.4):
# every line is a comment, a # HELP or # TYPE line, or a sample
# `name{label="value",...} value [timestamp]` with the format's escapes;
# anything else raises. Samples of a histogram family are checked too:
# buckets cumulative, a +Inf bucket equal to _count.
module PrometheusText
  Sample = Struct.new(:name, :labels, :value)
  Parsed = Struct.new(:types, :help, :samples) do
    # The samples named `name` whose labels include `labels`.
    def select(name, **labels)
      wanted = labels.transform_keys(&:to_s)
      samples.select { |s| s.name == name && wanted.all? { |k, v| s.labels[k] == v.to_s } }
    end

    # The value of the one sample named `name` with exactly those labels
    # (besides any listed in `ignoring`), or nil.
    def value(name, **labels)
      wanted = labels.transform_keys(&:to_s)
      found = samples.select { |s| s.name == name && s.labels == wanted }
      raise "#{found.size} samples of #{name} #{wanted}" if found.size > 1

      found.first&.value
    end
  end

  class ParseError < StandardError; end

  NAME = /[a-zA-Z_:][a-zA-Z0-9_:]*/
  TYPES = %w[counter gauge histogram summary untyped].freeze
  SAMPLE = /\A(#{NAME})(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?\z/
  LABEL = /\G[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\[\\"n])*)"[ \t]*(,|\z)/

  module_function

  def parse(text)
    parsed = Parsed.new({}, {}, [])
    text.each_line(chomp: true).with_index(1) do |line, number|
      next if line.strip.empty?

      parse_line(parsed, line)
    rescue ParseError => e
      raise ParseError, "line #{number}: #{e.message}: #{line.inspect}"
    end
    check_histograms(parsed)
    parsed
  end

  def parse_line(parsed, line)
    if line.start_with?("#")
      parse_comment(parsed, line)
    else
      match = SAMPLE.match(line) or raise ParseError, "not a sample"
      labels = parse_labels(match[2].to_s)
      family = family_of(parsed, match[1])
      raise ParseError, "sample #{match[1]} comes before its # TYPE" if family.nil?

      parsed.samples << Sample.new(match[1], labels, parse_value(match[3]))
    end
  end

  def parse_comment(parsed, line)
    kind, name, rest = line.split(/[ \t]+/, 4).drop(1)
    return unless %w[TYPE HELP].include?(kind)
    raise ParseError, "bad #{kind}" unless name&.match?(/\A#{NAME}\z/)

    if kind == "HELP"
      parsed.help[name] = rest.to_s
    else
      raise ParseError, "bad TYPE #{rest.inspect}" unless TYPES.include?(rest)
      raise ParseError, "second TYPE for #{name}" if parsed.types.key?(name)

      parsed.types[name] = rest
    end
  end

  def parse_labels(text)
    labels = {}
    position = 0
    while position < text.length
      match = LABEL.match(text, position) or raise ParseError, "bad labels at #{text[position..].inspect}"
      raise ParseError, "label #{match[1]} twice" if labels.key?(match[1])

      labels[match[1]] = match[2].gsub(/\\(.)/) { Regexp.last_match(1) == "n" ? "\n" : Regexp.last_match(1) }
      position = match.end(0)
    end
    labels
  end

  def parse_value(text)
    case text
    when "+Inf" then Float::INFINITY
    when "-Inf" then -Float::INFINITY
    when "NaN" then Float::NAN
    else Float(text)
    end
  rescue ArgumentError
    raise ParseError, "bad value #{text.inspect}"
  end

  # The declared family a sample belongs to (histogram and summary samples
  # carry suffixes).
  def family_of(parsed, name)
    return name if parsed.types.key?(name)

    base = name.sub(/_(bucket|sum|count)\z/, "")
    base if base != name && %w[histogram summary].include?(parsed.types[base])
  end

  def check_histograms(parsed)
    parsed.types.select { |_, type| type == "histogram" }.each_key do |family|
      series = parsed.samples.select { |s| s.name == "#{family}_bucket" }.group_by { |s| s.labels.except("le") }
      series.each { |labels, buckets| check_buckets(parsed, family, labels, buckets) }
    end
  end

  def check_buckets(parsed, family, labels, buckets)
    bounds = buckets.map { |b| parse_value(b.labels.fetch("le")) }
    counts = buckets.map(&:value)
    where = "#{family} #{labels}"
    check(bounds == bounds.sort, "#{where}: buckets out of order")
    check(counts == counts.sort, "#{where}: buckets not cumulative")
    check(bounds.last == Float::INFINITY, "#{where}: no +Inf bucket")
    count = parsed.samples.find { |s| s.name == "#{family}_count" && s.labels == labels }
    check(count&.value == counts.last, "#{where}: +Inf bucket #{counts.last} is not _count")
  end

  def check(condition, message)
    raise ParseError, message unless condition
  end
end
