# frozen_string_literal: true

module TaskerCore
  # Checks that a Ruby value is one JSON can hold as it is: a task's
  # context, a step's result, a hand-resolved result. Without the check the
  # native conversion stores NaN and Infinity as null, refuses other objects
  # only after the core has the step, and recurses without bound into deep
  # structures. The check names the first problem by its path (`$.x[2]`).
  module JsonValue
    # JSON.generate's own default limit.
    MAX_DEPTH = 100
    INTEGER_RANGE = (-(2**63)..((2**64) - 1)) # what the core's JSON numbers hold
    private_constant :INTEGER_RANGE

    module_function

    # Returns `value`; raises ValidationError "<what> <problem> at <path>".
    def check!(value, what)
      problem = problem_in(value, "$", 0)
      raise ValidationError, "#{what} #{problem}" if problem

      value
    end

    def problem_in(value, path, depth)
      case value
      when nil, true, false then nil
      when Integer, Float then number_problem(value, path)
      when String then string_problem(value, path)
      when Symbol then string_problem(value.name, path)
      when Array then array_problem(value, path, depth)
      when Hash then hash_problem(value, path, depth)
      else "holds #{describe(value)} at #{path}, which is not a JSON value " \
           "(use a Hash, Array, String, Integer, Float, true, false or nil)"
      end
    end

    def number_problem(value, path)
      if value.is_a?(Integer)
        "holds an integer beyond 64 bits at #{path}" unless INTEGER_RANGE.cover?(value)
      elsif !value.finite?
        "holds #{value} at #{path}, which JSON cannot represent"
      end
    end

    def array_problem(value, path, depth)
      return "is nested more than #{MAX_DEPTH} levels deep" if depth >= MAX_DEPTH

      value.each_with_index do |item, i|
        problem = problem_in(item, "#{path}[#{i}]", depth + 1)
        return problem if problem
      end
      nil
    end

    def hash_problem(value, path, depth)
      return "is nested more than #{MAX_DEPTH} levels deep" if depth >= MAX_DEPTH

      value.each do |key, item|
        problem = key_problem(key, path) || problem_in(item, child_path(path, key), depth + 1)
        return problem if problem
      end
      nil
    end

    def key_problem(key, path)
      return string_problem(key.to_s, path) if key.is_a?(String) || key.is_a?(Symbol)

      "has #{describe(key)} key at #{path}; JSON object keys are strings"
    end

    def string_problem(text, path)
      return nil if text.encoding == Encoding::UTF_8 ? text.valid_encoding? : utf8_compatible?(text)

      "holds a string that is not valid UTF-8 at #{path}"
    end

    # US-ASCII, and binary strings whose bytes are UTF-8, convert as they
    # are; other encodings convert when every character has a UTF-8 form.
    def utf8_compatible?(text)
      if [Encoding::BINARY, Encoding::US_ASCII].include?(text.encoding)
        return text.dup.force_encoding(Encoding::UTF_8).valid_encoding?
      end

      text.encode(Encoding::UTF_8)
      true
    rescue EncodingError
      false
    end

    def child_path(path, key)
      name = key.to_s
      name.match?(/\A[A-Za-z_][A-Za-z0-9_]*\z/) ? "#{path}.#{name}" : "#{path}[#{name.dump}]"
    end

    def describe(value)
      klass = value.class.name || value.class.inspect
      "#{/\A[AEIOU]/.match?(klass) ? 'an' : 'a'} #{klass}"
    end
  end
end
