-- The attachment quota (issue 16, Low): the bytes one uploader stored in
-- the last day are summed at each upload, by uploader and time.
CREATE INDEX blob_uploads_by_uploader ON blob_uploads (uploader, uploaded_at);
